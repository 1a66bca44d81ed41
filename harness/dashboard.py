"""What optuna-dashboard shows about the budget and the target, written into the study.

optuna-dashboard draws Optuna's own pages; it knows nothing of a parameter budget. A run
therefore attaches to its study (:func:`publish`, from the process that draws progress,
at most every ``PUBLISH_EVERY_S`` seconds and at the end):

* the accuracy-against-parameters figure of the report (budget and target lines, the
  baseline, rejected candidates at their parameter count), with
  ``optuna_dashboard.save_plotly_graph_object`` under a fixed id, so it is replaced, not added;
* a study note (``save_note``) with the summary: budget, target, trials by outcome, the
  baseline, the best trial and whether the target was met;

Each rejected candidate gets a trial note naming its parameter count and the budget
(:func:`note_rejection`), so rejections do not look like trials the pruner stopped. Read-only
commands (``harness dashboard`` included) never call any of this.
"""

from __future__ import annotations

import time

import optuna

__all__ = ["FIGURE_ID", "PUBLISH_EVERY_S", "Publisher", "note_rejection", "publish", "read_only_app", "summary_markdown"]

FIGURE_ID = "accuracy-vs-parameters"
PUBLISH_EVERY_S = 30.0


def summary_markdown(study: optuna.Study) -> str:
    from harness.study import summarize

    lines = summarize(study).lines()
    return "\n".join(
        ["## harness: budget and target", "", *(f"- {line.strip()}" if not line.startswith(" ") else f"  `{line.strip()}`"
                                                for line in lines), "",
         "The figure *accuracy-vs-parameters* below the history shows every trial against its trainable parameter "
         "count; a trial's user attribute `trainable_params` is that count (Optuna's \"Params\" are the sampled choices). "
         "Rejected candidates carry a note and were never trained."]  # fmt: skip
    )


def publish(study: optuna.Study) -> None:
    """Attach the figure, the summary note and the objective names to ``study`` (writes to its storage)."""
    from optuna_dashboard import save_note, save_plotly_graph_object

    from harness.report import _accuracy_figure, trials_frame

    frame = trials_frame(study)
    if not frame.empty:
        budget = int(study.user_attrs.get("budget", 0))
        target = float(study.user_attrs.get("target", 1.0))
        save_plotly_graph_object(study, _accuracy_figure(frame, budget, target), graph_object_id=FIGURE_ID)
    save_note(study, summary_markdown(study))


def note_rejection(trial: optuna.trial.BaseTrial, reason: str) -> None:
    """A trial note for a candidate rejected before training (live trials only)."""
    from optuna_dashboard import save_note

    if isinstance(trial, optuna.Trial):
        save_note(trial, f"**Rejected before training**: {reason}. Never trained: no accuracy, no weights.")


class Publisher:
    """:func:`publish`, at most every ``every`` seconds unless forced, under the study lock:
    the figure and the note are written in chunks, and two processes (``harness worker``s on
    one study) must not interleave them."""

    def __init__(self, study: optuna.Study, storage_url: str, every: float = PUBLISH_EVERY_S) -> None:
        self.study, self.url, self.every, self.last = study, storage_url, every, -float("inf")

    def __call__(self, force: bool = False, wait: bool = True) -> None:
        """``wait`` False (a stopped run's last publication): skipped if another process holds
        the study lock, rather than waiting for it with the stop ignored."""
        from harness.storage import study_lock

        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            with study_lock(self.url, self.study.study_name, wait=wait) as held:
                if held:
                    publish(self.study)


def read_only_app(storage, artifact_store):
    """optuna-dashboard's WSGI app over a read-only ``storage`` (and artifact store) for
    ``harness dashboard``: a request that would change the study (every route but GET's and the
    LLM queries: delete, rename, edit a note, tell, upload) is answered 403 with the reason
    before it runs, not a 500 with a traceback in the terminal. The storage and the store
    refuse such writes themselves too."""
    import json

    import bottle
    import optuna_dashboard

    app = optuna_dashboard.wsgi(storage, artifact_store=artifact_store)

    def refuse_writes(callback):
        def route(*args, **kwargs):
            request = bottle.request
            if request.method in ("GET", "HEAD") or request.path.startswith("/api/llm/"):
                return callback(*args, **kwargs)
            bottle.response.status = 403
            bottle.response.content_type = "application/json"
            return json.dumps({"reason": "harness dashboard is read-only: the study is not changed "
                                         "(run optuna-dashboard yourself to edit it)"})  # fmt: skip

        return route

    app.install(refuse_writes)
    return app
