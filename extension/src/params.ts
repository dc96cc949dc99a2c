/**
 * Typed inputs for run parameters, shared by the trigger form and "Schedule this notebook":
 * a checkbox for a bool, a number input for an int (whole numbers) or a float, text for a
 * string, JSON text for a list, a dict or a parameter of unknown type. Values are checked as
 * the server checks them (a bool is not a number, an int takes no 2.5), so a mistake is
 * named before anything is sent. In the trigger form a parameter's "sweep" toggle turns its
 * input into a comma-separated list of values (a JSON list for list, dict or untyped
 * parameters): the trigger's `sweep` makes one run per point, each value converted and checked
 * by the server as the command line's `--sweep` is (a bad one: a 400 naming the point).
 */
import { h, Schemas } from './api';

/** A parameter's JSON Schema (a pipeline's `Param(...)`): its type, title, description, choices. */
export type IParamSchema = Schemas['ParamSchema'];

/** One parameter's input and how to read it back. */
export interface IParamInput {
  name: string;
  type: string;
  /** A text, number or checkbox input; a choice (`enum`) is a select (a multiple one to sweep). */
  element: HTMLInputElement | HTMLSelectElement;
  /** The parameter's JSON Schema, when it has one (title, description, choices). */
  schema?: IParamSchema;
  /** The value to send, or throws an Error naming the parameter and what it expects. */
  value(): unknown;
  /** Whether the input holds a sweep's values (see {@link setSweep}). */
  sweeping: boolean;
  /** Turn the input into a list of values to sweep (or back into one value). */
  setSweep(on: boolean): void;
  /** The sweep's values (texts the server converts like `--sweep`), or an Error naming the parameter. */
  sweepValues(): unknown[];
}

/** Normalise the types the server uses ("str" from a notebook, "string" from a pipeline). */
function kindOf(type: string | null | undefined): string {
  return type === 'str' ? 'string' : type || 'null';
}

/** The kind of input a JSON Schema type asks for (when the default, None, says nothing). */
const SCHEMA_KINDS: Record<string, string> = {
  boolean: 'bool',
  integer: 'int',
  number: 'float',
  string: 'string',
  array: 'list',
  object: 'dict'
};

/** An input for parameter `name` of `type` with its default; a `schema` (a `Param`) with an
 * `enum` makes it a choice, and its `type` names the kind when the default does not. (Its other
 * keywords are the server's to check: its 400 names the parameter and the keyword, and the
 * input is marked; the row says a number's bounds.) */
export function paramInput(
  name: string,
  type: string | null | undefined,
  initial: unknown,
  schema?: IParamSchema
): IParamInput {
  const schemaType = typeof schema?.type === 'string' ? SCHEMA_KINDS[schema.type] : undefined;
  const kind = kindOf(type) === 'null' && schemaType ? schemaType : kindOf(type);
  if (schema?.enum?.length) {
    return choiceInput(name, kind, initial, schema);
  }
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
  const single = { type: el.type, value: el.value, checked: el.checked };
  const input: IParamInput = {
    name,
    type: kind,
    element: el,
    schema,
    value,
    sweeping: false,
    setSweep(on: boolean): void {
      if (on === input.sweeping) {
        return;
      }
      input.sweeping = on;
      el.dataset.sweep = String(on);
      if (on) {
        Object.assign(single, { type: el.type, value: el.value, checked: el.checked });
        const now = kind === 'bool' ? 'true, false' : el.value;
        el.type = 'text';
        el.value = now;
        el.placeholder = JSON_KINDS.has(kind)
          ? 'a JSON list: [1, 2], ["a", "b"]'
          : 'values, comma-separated: 0.1, 1, 10';
      } else {
        el.type = single.type;
        el.value = single.value;
        el.checked = single.checked;
        el.placeholder = '';
      }
    },
    sweepValues(): unknown[] {
      const text = el.value.trim();
      let values: unknown[];
      if (JSON_KINDS.has(kind) && text.startsWith('[')) {
        try {
          values = JSON.parse(text);
        } catch {
          throw new Error(`${name}: the sweep's values are not a JSON list`);
        }
      } else {
        values = text.split(',').map(v => v.trim());
      }
      if (!values.length || values.some(v => v === '')) {
        throw new Error(`${name}: give the sweep's values, comma-separated (none may be empty)`);
      }
      return values;
    }
  };
  return input;
}

/** A select of the schema's `enum` choices (shown as JSON unless strings); sweeping makes it a
 * multiple select: one run per chosen value. */
function choiceInput(name: string, kind: string, initial: unknown, schema: IParamSchema): IParamInput {
  const choices = schema.enum as unknown[];
  const el = h('select', { class: 'jp-mod-styled nbflow-param-input nbflow-param-choice', name, 'data-type': kind });
  choices.forEach((choice, i) => {
    const option = h('option', { value: String(i) }, typeof choice === 'string' ? choice : JSON.stringify(choice));
    option.selected = JSON.stringify(choice) === JSON.stringify(initial);
    el.appendChild(option);
  });
  const input: IParamInput = {
    name,
    type: kind,
    element: el,
    schema,
    value: () => choices[Number(el.value)],
    sweeping: false,
    setSweep(on: boolean): void {
      input.sweeping = on;
      el.multiple = on;
      el.dataset.sweep = String(on);
    },
    sweepValues(): unknown[] {
      const values = Array.from(el.selectedOptions).map(o => choices[Number(o.value)]);
      if (!values.length) {
        throw new Error(`${name}: pick the values to sweep (Ctrl+click for several)`);
      }
      return values;
    }
  };
  return input;
}

/** Kinds whose values are JSON text (a sweep of them may be a JSON list). */
const JSON_KINDS = new Set(['list', 'dict', 'null']);

/** What a trigger sends: the fixed `params` and, when a parameter sweeps, the `sweep` grid. */
export function readTrigger(inputs: IParamInput[]): {
  params: Record<string, unknown>;
  sweep?: Record<string, unknown[]>;
} {
  const params: Record<string, unknown> = {};
  const sweep: Record<string, unknown[]> = {};
  for (const input of inputs) {
    if (input.sweeping) {
      sweep[input.name] = input.sweepValues();
    } else {
      params[input.name] = input.value();
    }
  }
  return Object.keys(sweep).length ? { params, sweep } : { params };
}

/** The values of `inputs`, or the first mistake as an Error. */
export function readParams(inputs: IParamInput[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const input of inputs) {
    out[input.name] = input.value();
  }
  return out;
}

/** A number's bounds as the row says them: " ≥ 0", " ≥ 0 ≤ 10" ("" without). */
function bounds(schema?: IParamSchema): string {
  const min = typeof schema?.minimum === 'number' ? ` ≥ ${schema.minimum}` : '';
  const max = typeof schema?.maximum === 'number' ? ` ≤ ${schema.maximum}` : '';
  return min + max;
}

/** A labelled row for a parameter's input (the label names the type; a schema's title names
 * the parameter, its description follows the row); with `sweepable`, a "sweep" toggle after it. */
export function paramRow(input: IParamInput, help = '', sweepable = false): HTMLElement {
  const description = input.schema?.description ?? '';
  const title = input.schema?.title;
  let row: HTMLElement = h(
    'label',
    { class: 'nbflow-param-row', title: help || description || input.type },
    h('span', { class: 'nbflow-param-name', title: input.name }, title ? `${title} (${input.name})` : input.name),
    input.element,
    h('span', { class: 'nbflow-param-type' }, input.type + bounds(input.schema))
  );
  if (description) {
    row = h(
      'div',
      { class: 'nbflow-param-described' },
      row,
      h('div', { class: 'nbflow-param-description' }, description)
    );
  }
  if (!sweepable) {
    return row;
  }
  const toggle = h('input', { type: 'checkbox', class: 'nbflow-sweep-toggle', 'data-param': input.name });
  toggle.onchange = () => input.setSweep(toggle.checked);
  return h(
    'div',
    { class: 'nbflow-param-line' },
    row,
    h('label', { class: 'nbflow-sweep-label', title: `run once per value of ${input.name}` }, toggle, ' sweep')
  );
}
