/**
 * nbflow-jupyterlab: nbflow's web UI inside JupyterLab.
 *
 * - left sidebar: pipelines with state, schedule, trigger (params form), pause/unpause
 * - main area: a pipeline's live DAG (graphviz SVG from the server), runs table, task pane
 * - command palette + launcher: "nbflow: Open pipelines"
 * - notebook toolbar: "DAG" shows the pipeline(s) the notebook belongs to (asks the server:
 *   `GET pipelines?notebook=PATH`, matching a pipeline's file or its notebook tasks)
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, ToolbarButton, showErrorMessage } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { IDisposable } from '@lumino/disposable';

import { IPipelineList, request } from './api';
import { DagView } from './dagview';
import { PipelinesPanel } from './sidebar';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161"><circle cx="5" cy="6" r="3"/><circle cx="5" cy="18" r="3"/><circle cx="19" cy="12" r="3"/>
<path d="M7.5 7.2l9 3.6-.6 1.4-9-3.6zM7 16.4l9-3.6.6 1.4-9 3.6z"/></g></svg>`;
export const nbflowIcon = new LabIcon({ name: 'nbflow:dag', svgstr: ICON_SVG });

const CMD_OPEN = 'nbflow:open-panel';
const CMD_DAG = 'nbflow:open-dag';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbflow-jupyterlab:plugin',
  description: 'nbflow pipelines, live DAGs, runs, logs and output notebooks',
  autoStart: true,
  optional: [ICommandPalette, ILauncher],
  activate: (app: JupyterFrontEnd, palette: ICommandPalette | null, launcher: ILauncher | null) => {
    const views = new Map<string, MainAreaWidget<DagView>>();
    const openNotebook = (path: string) => void app.commands.execute('docmanager:open', { path });

    const openDag = (name: string, runId?: number) => {
      let view = views.get(name);
      if (!view || view.isDisposed) {
        const content = new DagView(name, openNotebook);
        view = new MainAreaWidget({ content });
        view.id = `nbflow-dag-area-${name}`;
        view.title.label = `DAG: ${name}`;
        view.title.icon = nbflowIcon;
        view.title.closable = true;
        views.set(name, view);
        app.shell.add(view, 'main');
      }
      view.content.showRun(runId ?? null);
      app.shell.activateById(view.id);
    };

    const panel = new PipelinesPanel(openDag);
    panel.title.icon = nbflowIcon;
    app.shell.add(panel, 'left', { rank: 600 });

    app.commands.addCommand(CMD_OPEN, {
      label: 'nbflow: Open pipelines',
      caption: 'Show nbflow pipelines, runs and DAGs',
      icon: nbflowIcon,
      execute: () => {
        app.shell.activateById(panel.id);
        void panel.refresh();
      }
    });
    app.commands.addCommand(CMD_DAG, {
      label: args => `nbflow: Open DAG ${args.name ?? ''}`,
      execute: args => openDag(String(args.name), args.run === undefined ? undefined : Number(args.run))
    });
    palette?.addItem({ command: CMD_OPEN, category: 'nbflow' });
    launcher?.add({ command: CMD_OPEN, category: 'Other', rank: 1 });
    app.docRegistry.addWidgetExtension('Notebook', new NotebookDagButton(openDag));
  }
};

/** A toolbar button on notebooks: open the DAG of the pipeline(s) this notebook is part of. */
class NotebookDagButton implements DocumentRegistry.IWidgetExtension<NotebookPanel, DocumentRegistry.IModel> {
  constructor(private openDag: (name: string) => void) {}

  createNew(panel: NotebookPanel): IDisposable {
    const button = new ToolbarButton({
      className: 'nbflow-notebook-dag',
      icon: nbflowIcon,
      label: 'DAG',
      tooltip: 'Show the nbflow DAG of the pipeline this notebook belongs to',
      onClick: async () => {
        const path = panel.context.path;
        try {
          const { pipelines } = await request<IPipelineList>(`pipelines?notebook=${encodeURIComponent(path)}`);
          if (!pipelines.length) {
            void showErrorMessage(
              'No nbflow pipeline',
              `No known pipeline is defined in ${path} or runs it as a notebook task. Run it once (nbflow run ${path}) or put it in the DAG folder.`
            );
          }
          pipelines.forEach(p => this.openDag(p.name));
        } catch (err) {
          void showErrorMessage('nbflow', (err as Error).message);
        }
      }
    });
    panel.toolbar.insertItem(10, 'nbflowDag', button);
    return button;
  }
}

export default plugin;
