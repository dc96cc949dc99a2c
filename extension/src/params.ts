/**
 * Typed inputs for run parameters, shared by the trigger form and "Schedule this notebook":
 * a checkbox for a bool, a number input for an int (whole numbers) or a float, text for a
 * string, JSON text for a list, a dict or a parameter of unknown type. Values are checked as
 * the server checks them (a bool is not a number, an int takes no 2.5), so a mistake is
 * named before anything is sent.
 */
import { h } from './api';

/** One parameter's input and how to read it back. */
export interface IParamInput {
  name: string;
  type: string;
  element: HTMLInputElement;
  /** The value to send, or throws an Error naming the parameter and what it expects. */
  value(): unknown;
}

/** Normalise the types the server uses ("str" from a notebook, "string" from a pipeline). */
function kindOf(type: string | null | undefined): string {
  return type === 'str' ? 'string' : type || 'null';
}

/** An input for parameter `name` of `type` with its default. */
export function paramInput(name: string, type: string | null | undefined, initial: unknown): IParamInput {
  const kind = kindOf(type);
  const el = h('input', { class: 'jp-mod-styled nbflow-param-input', name, 'data-type': kind });
  if (kind === 'bool') {
    el.type = 'checkbox';
    el.checked = initial === true;
  } else if (kind === 'int' || kind === 'float') {
    el.type = 'number';
    el.step = kind === 'int' ? '1' : 'any';
    el.value =
      initial == null
        ? ''
        : kind === 'float' && Number.isInteger(initial)
          ? (initial as number).toFixed(1)
          : String(initial);
  } else {
    el.type = 'text';
    el.value = kind === 'string' ? String(initial ?? '') : initial === undefined ? '' : JSON.stringify(initial);
  }
  const value = (): unknown => {
    if (kind === 'bool') {
      return el.checked;
    }
    if (kind === 'int' || kind === 'float') {
      const text = el.value.trim();
      const n = Number(text);
      if (!text || !Number.isFinite(n)) {
        throw new Error(`${name}: enter a number${kind === 'int' ? ' (a whole number)' : ''}`);
      }
      if (kind === 'int' && !Number.isInteger(n)) {
        throw new Error(`${name}: an int parameter takes whole numbers, not ${text}`);
      }
      return n;
    }
    if (kind === 'string') {
      return el.value;
    }
    try {
      return JSON.parse(el.value);
    } catch {
      throw new Error(
        `${name}: enter JSON (${kind === 'list' ? 'e.g. [1, 2]' : kind === 'dict' ? 'e.g. {"a": 1}' : 'a number, "text", true, null, [..] or {..}'})`
      );
    }
  };
  return { name, type: kind, element: el, value };
}

/** The values of `inputs`, or the first mistake as an Error. */
export function readParams(inputs: IParamInput[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const input of inputs) {
    out[input.name] = input.value();
  }
  return out;
}

/** A labelled row for a parameter's input (the label names the type). */
export function paramRow(input: IParamInput, help = ''): HTMLElement {
  return h(
    'label',
    { class: 'nbflow-param-row', title: help || input.type },
    h('span', { class: 'nbflow-param-name' }, input.name),
    input.element,
    h('span', { class: 'nbflow-param-type' }, input.type)
  );
}
