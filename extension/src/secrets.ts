/**
 * A read-only list of the stored connections and variables in the sidebar, as the REST API
 * gives them: passwords, sensitive extra fields and sensitive variables are already `***`
 * (the server never sends them). Added and changed with `nbflow connections` / `nbflow variables`.
 */
import { ApiError, Schemas, h, request } from './api';

export type IConnection = Schemas['Connection'];
export type IVariable = Schemas['Variable'];

/** The section's element and its refresh. */
export class SecretsSection {
  readonly node = h('details', { class: 'nbflow-secrets' });
  private body = h('div', { class: 'nbflow-secrets-body' });

  constructor() {
    this.node.append(h('summary', {}, 'Connections & variables'), this.body);
  }

  /** Reload both lists (errors are said in the section, never thrown). */
  async refresh(): Promise<void> {
    try {
      const [conns, vars] = await Promise.all([
        request<{ connections: IConnection[] }>('connections'),
        request<{ variables: IVariable[] }>('variables')
      ]);
      this.render(conns.connections, vars.variables);
    } catch (err) {
      const text = err instanceof ApiError ? `${err.status}: ${err.message}` : String(err);
      this.body.replaceChildren(h('div', { class: 'nbflow-status' }, text));
    }
  }

  private render(conns: IConnection[], vars: IVariable[]): void {
    const connRows = conns.map(c =>
      h(
        'tr',
        { class: 'nbflow-connection', 'data-connection': c.name, title: c.description || c.name },
        h('td', {}, c.name),
        h('td', {}, c.conn_type),
        h('td', { class: 'nbflow-uri' }, c.uri)
      )
    );
    const varRows = vars.map(v =>
      h(
        'tr',
        { class: 'nbflow-variable', 'data-variable': v.key, title: v.description || v.key },
        h('td', {}, v.key),
        h('td', { colspan: '2' }, typeof v.value === 'string' ? v.value : JSON.stringify(v.value))
      )
    );
    const empty = (what: string, how: string) =>
      h('tr', {}, h('td', { colspan: '3', class: 'nbflow-empty' }, `No ${what} (${how})`));
    this.body.replaceChildren(
      h(
        'table',
        { class: 'nbflow-secrets-table' },
        h('tr', {}, h('th', { colspan: '3' }, 'Connections')),
        ...(connRows.length ? connRows : [empty('connections', 'nbflow connections add NAME --uri ...')]),
        h('tr', {}, h('th', { colspan: '3' }, 'Variables')),
        ...(varRows.length ? varRows : [empty('variables', 'nbflow variables set KEY VALUE')])
      )
    );
  }
}
