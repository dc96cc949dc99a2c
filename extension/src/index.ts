/**
 * nbflow-jupyterlab: nbflow's web UI inside JupyterLab.
 *
 * - left sidebar: the scheduler's state (Start), pipelines with state, schedule in words and
 *   next run, why a queued run waits, trigger (typed params form), pause/unpause
 * - main area: a pipeline's views (live DAG, grid, Gantt, durations), runs table with paging
 *   (parameters, chosen metrics, sortable, sweep links, runs picked to compare), task pane with
 *   the task actions; a try's full log in a tab; the Compare view of a sweep or of chosen runs
 *   (params + metrics table, metric-against-parameter chart, nbdime diff of output notebooks)
 * - notebook toolbar: "DAG" (the pipeline(s) the notebook belongs to) and "Schedule" (the
 *   "Schedule this notebook" dialog, also in the file browser's context menu)
 * - a read-only drive `nbflow-runs:` of the artifact root: output notebooks open wherever the
 *   nbflow home is (a hidden `.nbflow` too), each named (so titled) `task · run N · try K`
 * - DAG tabs, log tabs, Compare tabs and the sidebar come back on reload (JupyterLab's layout restorer)
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, ToolbarButton, WidgetTracker, showErrorMessage } from '@jupyterlab/apputils';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Drive } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { IRenderMimeRegistry, RenderMimeRegistry, standardRendererFactories } from '@jupyterlab/rendermime';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { IDisposable } from '@lumino/disposable';

import { DRIVE, IPipelineList, request } from './api';
import { CompareSource, CompareView, compareKey } from './compare';
import { DagView } from './dagview';
import { LogView } from './logview';
import { scheduleNotebook } from './schedule';
import { PipelinesPanel } from './sidebar';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161"><circle cx="5" cy="6" r="3"/><circle cx="5" cy="18" r="3"/><circle cx="19" cy="12" r="3"/>
<path d="M7.5 7.2l9 3.6-.6 1.4-9-3.6zM7 16.4l9-3.6.6 1.4-9 3.6z"/></g></svg>`;
export const nbflowIcon = new LabIcon({ name: 'nbflow:dag', svgstr: ICON_SVG });

const CMD_OPEN = 'nbflow:open-panel';
const CMD_DAG = 'nbflow:open-dag';
const CMD_LOG = 'nbflow:open-log';
const CMD_SCHEDULE = 'nbflow:schedule-notebook';
const CMD_COMPARE = 'nbflow:open-compare';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbflow-jupyterlab:plugin',
  description: 'nbflow pipelines, live DAGs, history, schedules, logs and output notebooks',
  autoStart: true,
  optional: [ICommandPalette, ILauncher, ILayoutRestorer, IFileBrowserFactory, IRenderMimeRegistry],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    restorer: ILayoutRestorer | null,
    browsers: IFileBrowserFactory | null,
    rendermime: IRenderMimeRegistry | null
  ) => {
    app.serviceManager.contents.addDrive(new Drive({ name: DRIVE, apiEndpoint: 'nbflow/api/contents' }));
    const dags = new WidgetTracker<MainAreaWidget<DagView>>({ namespace: 'nbflow-dag' });
    const logs = new WidgetTracker<MainAreaWidget<LogView>>({ namespace: 'nbflow-log' });
    const compares = new WidgetTracker<MainAreaWidget<CompareView>>({ namespace: 'nbflow-compare' });
    const mime = rendermime ?? new RenderMimeRegistry({ initialFactories: standardRendererFactories });

    // an output notebook's file name in the drive is its title (`task · run N · try K.ipynb`):
    // JupyterLab renames a document whose title is changed, so the title is never set here
    const openNotebook = (path: string) => void app.commands.execute('docmanager:open', { path });
    const openLog = (runId: number, task: string, tryNumber: number | null) =>
      void app.commands.execute(CMD_LOG, { run: runId, task, try: tryNumber ?? 0 });

    const openCompare = (source: CompareSource) =>
      void app.commands.execute(
        CMD_COMPARE,
        'sweep' in source ? { sweep: source.sweep } : { runs: source.runs.join(',') }
      );

    const openDag = (name: string, runId?: number) => {
      let view = dags.find(w => w.content.pipeline === name);
      if (!view) {
        const content = new DagView(name, { notebook: openNotebook, log: openLog, compare: openCompare });
        view = new MainAreaWidget({ content });
        view.id = `nbflow-dag-area-${name}`;
        view.title.label = `DAG: ${name}`;
        view.title.icon = nbflowIcon;
        view.title.closable = true;
        void dags.add(view);
        app.shell.add(view, 'main');
      }
      view.content.showRun(runId ?? null);
      app.shell.activateById(view.id);
    };

    const panel = new PipelinesPanel(openDag, openCompare);
    panel.title.icon = nbflowIcon;
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, 'nbflow-sidebar');

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
      execute: args => openDag(String(args.name), args.run ? Number(args.run) : undefined)
    });
    app.commands.addCommand(CMD_LOG, {
      label: args => `nbflow: Log of ${args.task ?? ''}`,
      execute: args => {
        const runId = Number(args.run);
        const task = String(args.task);
        const tryNumber = Number(args.try) || null;
        let view = logs.find(
          w => w.content.runId === runId && w.content.task === task && w.content.tryNumber === tryNumber
        );
        if (!view) {
          const content = new LogView(runId, task, tryNumber);
          view = new MainAreaWidget({ content });
          view.id = `${content.id}-area`;
          view.title.label = content.title.label;
          view.title.icon = nbflowIcon;
          view.title.closable = true;
          void logs.add(view);
          app.shell.add(view, 'main');
        }
        app.shell.activateById(view.id);
      }
    });
    app.commands.addCommand(CMD_COMPARE, {
      label: args => (args.sweep ? `nbflow: Compare sweep ${args.sweep}` : `nbflow: Compare runs ${args.runs ?? ''}`),
      execute: args => {
        const source: CompareSource = args.sweep
          ? { sweep: Number(args.sweep) }
          : {
              runs: String(args.runs ?? '')
                .split(',')
                .filter(Boolean)
                .map(Number)
            };
        const key = compareKey(source);
        let view = compares.find(w => w.content.key === key);
        if (!view) {
          const content = new CompareView(source, mime, (pipeline, run) => openDag(pipeline, run));
          view = new MainAreaWidget({ content });
          view.id = `${content.id}-area`;
          view.title.label = content.title.label;
          view.title.icon = nbflowIcon;
          view.title.closable = true;
          void compares.add(view);
          app.shell.add(view, 'main');
        } else {
          void view.content.refresh();
        }
        app.shell.activateById(view.id);
      }
    });
    const selectedNotebook = (): string | null => {
      const item = browsers?.tracker.currentWidget?.selectedItems().next();
      const model = item && !item.done ? item.value : null;
      return model && model.type === 'notebook' ? model.path : null;
    };
    app.commands.addCommand(CMD_SCHEDULE, {
      label: 'Schedule this notebook (nbflow)…',
      caption: 'Run this notebook on a schedule: nbflow writes a pipeline file into the DAG folder',
      icon: nbflowIcon,
      isVisible: () => selectedNotebook() !== null,
      execute: args => {
        const path = typeof args.path === 'string' ? args.path : selectedNotebook();
        if (path) {
          void runSchedule(path, openDag, panel);
        }
      }
    });
    app.contextMenu.addItem({
      command: CMD_SCHEDULE,
      selector: '.jp-DirListing-item[data-file-type="notebook"]',
      rank: 3
    });

    if (restorer) {
      void restorer.restore(dags, {
        command: CMD_DAG,
        args: w => ({ name: w.content.pipeline }),
        name: w => w.content.pipeline
      });
      void restorer.restore(compares, {
        command: CMD_COMPARE,
        args: w =>
          'sweep' in w.content.source ? { sweep: w.content.source.sweep } : { runs: w.content.source.runs.join(',') },
        name: w => w.content.key
      });
      void restorer.restore(logs, {
        command: CMD_LOG,
        args: w => ({ run: w.content.runId, task: w.content.task, try: w.content.tryNumber ?? 0 }),
        name: w => w.content.id
      });
    }
    palette?.addItem({ command: CMD_OPEN, category: 'nbflow' });
    launcher?.add({ command: CMD_OPEN, category: 'Other', rank: 1 });
    app.docRegistry.addWidgetExtension('Notebook', new NotebookButtons(openDag, panel));
  }
};

async function runSchedule(path: string, openDag: (name: string) => void, panel: PipelinesPanel): Promise<void> {
  try {
    await scheduleNotebook(path, name => {
      void panel.refresh();
      openDag(name);
    });
  } catch (err) {
    void showErrorMessage('Schedule this notebook', (err as Error).message);
  }
}

/** Notebook toolbar buttons: the DAG of the pipeline(s) the notebook is part of; Schedule. */
class NotebookButtons implements DocumentRegistry.IWidgetExtension<NotebookPanel, DocumentRegistry.IModel> {
  constructor(
    private openDag: (name: string) => void,
    private panel: PipelinesPanel
  ) {}

  createNew(nb: NotebookPanel): IDisposable {
    const dag = new ToolbarButton({
      className: 'nbflow-notebook-dag',
      icon: nbflowIcon,
      label: 'DAG',
      tooltip: 'Show the nbflow DAG of the pipeline this notebook belongs to',
      onClick: async () => {
        const path = nb.context.path;
        try {
          const { pipelines } = await request<IPipelineList>(`pipelines?notebook=${encodeURIComponent(path)}`);
          if (!pipelines.length) {
            void showErrorMessage(
              'No nbflow pipeline',
              `No known pipeline is defined in ${path} or runs it as a notebook task. Run its cell tasks (%nbflow run this), press "Schedule", or put a pipeline file in the DAG folder.`
            );
          }
          pipelines.forEach(p => this.openDag(p.name));
        } catch (err) {
          void showErrorMessage('nbflow', (err as Error).message);
        }
      }
    });
    const schedule = new ToolbarButton({
      className: 'nbflow-notebook-schedule',
      label: 'Schedule',
      tooltip: 'Schedule this notebook with nbflow (a pipeline file in the DAG folder; the scheduler runs it)',
      onClick: async () => {
        if (nb.context.model.dirty) {
          await nb.context.save();
        }
        await runSchedule(nb.context.path, this.openDag, this.panel);
      }
    });
    nb.toolbar.insertItem(10, 'nbflowDag', dag);
    nb.toolbar.insertItem(11, 'nbflowSchedule', schedule);
    return {
      get isDisposed() {
        return dag.isDisposed && schedule.isDisposed;
      },
      dispose() {
        dag.dispose();
        schedule.dispose();
      }
    };
  }
}

export default plugin;
