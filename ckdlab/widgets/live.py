"""Live distillation: change CKD's loss weights and the KD temperature while the student trains.

The panel wraps any :class:`ckdlab.engine.Trainer` (a :class:`~ckdlab.engine.distill.Distiller`
for CKD): one slider per loss term of ``trainer.available_terms()``, a temperature slider when
the trainer has ``set_temperature``, and start / pause / stop buttons.

Why it does not block the kernel: :meth:`LiveDistillationPanel.start` schedules an asyncio task
on the kernel's running event loop. The task runs one ``trainer.step()`` and then
``await asyncio.sleep(0)``, which hands control back to the loop, so widget messages (a moved
slider, a pause click) are processed between two steps. A weight change therefore always lands
*between* steps: it applies from the next step and the trainer records it, with its step, in
``events.jsonl`` and ``trainer.history``.

Every ``refresh_every`` steps the panel redraws the per-term loss curves (with the weight
changes marked) and the student's relation map for a fixed probe sentence (teacher | student |
difference when the trainer has a teacher).

Threads. JupyterLab 4 may deliver widget messages on a kernel *subshell* (ipykernel 7), i.e. on
another thread that runs while a step is in progress. So the panel never lets a handler touch
the run mid-step: every step holds ``self.step_lock``, a slider handler takes the same lock
(so its change lands between two steps, even from another thread), and start / pause / stop
are handed to the training loop's own thread with ``call_soon_threadsafe``.

Headless use (tests, papermill) needs no event loop::

    panel = LiveDistillationPanel(distiller, refresh_every=2)
    panel.sliders["wr_pair"].value = 2.0      # same as moving the slider
    panel.run_steps(3)
    panel.state()["weights"]["wr_pair"]       # 2.0
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ckdlab.engine.trainer import Trainer
from ckdlab.objectives.layer_map import resolve_layer_map
from ckdlab.viz.curves import plot_loss_terms
from ckdlab.viz.relations import plot_relation, plot_teacher_student, relation_view, teacher_student_views
from ckdlab.viz.tokens import encode
from ckdlab.widgets.explorer import DRAW_LOCK, to_png

TERM_LABELS = {
    "wr_pair": "λ WR pair",
    "wr_triplet": "λ WR triplet",
    "ltr_pair": "λ LTR pair",
    "ltr_triplet": "λ LTR triplet",
    "kd": "λ KD",
    "ce": "λ CE",
}
TEMPERATURE = "temperature"
DEFAULT_PROBE = "The film is a charming, funny and moving story."
STATUSES = ("idle", "running", "paused", "stopped", "finished", "error")


class LiveDistillationPanel:
    """Sliders and start / pause / stop around a step-wise trainer (see the module docstring).

    Args:
        trainer: a :class:`~ckdlab.engine.Trainer` or :class:`~ckdlab.engine.distill.Distiller`.
        probe: the sentence whose relation map is redrawn while training.
        refresh_every: redraw the figures every this many steps (and when a run ends).
        max_steps: stop after this global step (default: the trainer's ``total_steps``).
        relation: which relation of the probe to show (``wr_pair`` | ``wr_triplet`` | ``ltr_pair`` | ``ltr_triplet``).
        weight_max: upper end of the weight sliders (at least twice the initial weight).
        temperature_range: ``(min, max)`` of the temperature slider.
        dpi: resolution of the figures; lower is faster.
    """

    def __init__(
        self,
        trainer: Trainer,
        probe: str = DEFAULT_PROBE,
        refresh_every: int = 5,
        max_steps: int | None = None,
        relation: str = "wr_pair",
        weight_max: float = 5.0,
        temperature_range: tuple[float, float] = (0.5, 10.0),
        dpi: int = 80,
    ) -> None:
        if not hasattr(trainer, "step") or not hasattr(trainer, "set_weight"):
            raise ValueError(f"trainer must be a step-wise ckdlab Trainer (with step() and set_weight()), got {type(trainer).__name__}")
        if not isinstance(refresh_every, int) or refresh_every < 1:
            raise ValueError(f"refresh_every must be a positive int (steps between redraws), got {refresh_every!r}")
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
            raise ValueError(f"max_steps must be a positive int or None (= the trainer's total_steps), got {max_steps!r}")
        if relation not in ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet"):
            raise ValueError(f"relation={relation!r} is not supported; use wr_pair, wr_triplet, ltr_pair or ltr_triplet")
        self.trainer = trainer
        self.probe = probe
        self.refresh_every = refresh_every
        self._max_steps = max_steps
        self.relation = relation
        self.dpi = dpi
        self.status = "idle"
        self.error: BaseException | None = None
        self.task: asyncio.Task | None = None
        self.log: list[dict[str, Any]] = []
        self.last_logs: dict[str, float] = {}
        self.steps_run = 0
        self.refreshes = 0
        self.step_seconds: list[float] = []
        self.refresh_seconds: list[float] = []
        self._resume: asyncio.Event | None = None
        self.step_lock = threading.RLock()
        # The loop that runs the background task, and its thread: the kernel's loop when the
        # panel is built in a notebook cell (button clicks may arrive on other threads).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside an event loop (a script, a test): start() binds the loop it runs in
            loop = None
        if loop is not None:
            self._bind_loop(loop)
        self._teacher_probe = None
        self.probe_views: tuple[Any, ...] = ()

        # The sliders show the weights the first step will use (balanced ones included).
        trainer.start()
        terms = tuple(trainer.available_terms())
        if TEMPERATURE in terms:
            raise ValueError(f"a loss term may not be called '{TEMPERATURE}': that slider name is taken by the KD temperature")
        self.sliders: dict[str, widgets.FloatSlider] = {}
        for name in terms:
            value = float(trainer.weights.get(name, 0.0))
            self.sliders[name] = widgets.FloatSlider(
                value=value, min=0.0, max=max(weight_max, 2.0 * value), step=0.05, description=TERM_LABELS.get(name, f"λ {name}"),
                continuous_update=False, readout_format=".2f",
            )
        if hasattr(trainer, "set_temperature"):
            low, high = temperature_range
            current = float(getattr(trainer, "temperature", 1.0))
            if not 0 < low < high:
                raise ValueError(f"temperature_range must be (min, max) with 0 < min < max, got {temperature_range!r}")
            self.sliders[TEMPERATURE] = widgets.FloatSlider(
                value=current, min=min(low, current), max=max(high, current), step=0.1, description="T (KD)",
                continuous_update=False, readout_format=".1f",
            )
        for name, slider in self.sliders.items():
            slider.observe(self._on_slider, names="value")
            slider.add_class(f"ckdlab-live-{name}")
        self.buttons = {
            "start": widgets.Button(description="start", icon="play", button_style="success"),
            "pause": widgets.Button(description="pause", icon="pause", disabled=True),
            "stop": widgets.Button(description="stop", icon="stop", button_style="danger"),
        }
        self.buttons["start"].on_click(lambda _: self.start())
        self.buttons["pause"].on_click(lambda _: self.pause())
        self.buttons["stop"].on_click(lambda _: self.stop())
        for name, button in self.buttons.items():
            button.add_class(f"ckdlab-live-{name}")
        self.status_html = widgets.HTML()
        self.status_html.add_class("ckdlab-live-status")
        self.curves = widgets.Image(format="png")
        self.relation_image = widgets.Image(format="png")
        self.widget = widgets.VBox(
            [
                widgets.HBox([widgets.VBox(list(self.sliders.values())), widgets.VBox([*self.buttons.values(), self.status_html])]),
                self.curves,
                self.relation_image,
            ]
        )
        self.widget.add_class("ckdlab-live")
        self.refresh()
        self._show_status()

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    # ----------------------------------------------------------------- state
    @property
    def max_steps(self) -> int:
        if self._max_steps is not None:
            return self._max_steps
        self.trainer.setup()
        return int(self.trainer.total_steps)

    @property
    def done(self) -> bool:
        return self.trainer.global_step >= self.max_steps

    def _log_event(self, event: str) -> None:
        self.trainer.logger.log_event(self.trainer.global_step, event, source="live_panel")

    def _show_status(self) -> None:
        step = self.trainer.global_step
        total = self._max_steps if self._max_steps is not None else getattr(self.trainer, "total_steps", None)
        loss = self.last_logs.get("loss")
        parts = [f"<b>{self.status}</b>", f"step {step}" + (f" / {total}" if total else "")]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if self.error is not None:
            parts.append(f"<span style='color:#b00020'>{type(self.error).__name__}: {self.error}</span>")
        self.status_html.value = " · ".join(parts)
        finished = self.status in ("stopped", "finished", "error")
        self.buttons["start"].disabled = finished or self.status == "running"
        self.buttons["start"].description = "resume" if self.status == "paused" else "start"
        self.buttons["pause"].disabled = self.status != "running"
        self.buttons["stop"].disabled = finished
        for slider in self.sliders.values():
            slider.disabled = finished

    def _on_slider(self, change: dict[str, Any]) -> None:
        name = next(n for n, s in self.sliders.items() if s is change["owner"])
        # Waits for a step in progress on another thread, so the change applies from the next step.
        with self.step_lock:
            if name == TEMPERATURE:
                self.trainer.set_temperature(float(change["new"]))
            else:
                self.trainer.set_weight(name, float(change["new"]))

    def _bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._loop_thread = loop, threading.get_ident()

    def _elsewhere(self, action) -> bool:
        """If a loop is bound and we are on another thread, schedule ``action`` on the loop's
        thread (it then runs between two steps) and return True."""
        loop = self._loop
        if loop is None or loop.is_closed() or threading.get_ident() == self._loop_thread:
            return False
        loop.call_soon_threadsafe(action)
        return True

    def state(self) -> dict[str, Any]:
        """Status, step, weights, temperature, recorded changes and the last logged values."""
        return {
            "status": self.status,
            "global_step": self.trainer.global_step,
            "steps_run": self.steps_run,
            "max_steps": self._max_steps if self._max_steps is not None else getattr(self.trainer, "total_steps", None),
            "weights": dict(self.trainer.weights),
            "temperature": getattr(self.trainer, "temperature", None),
            "sliders": {name: slider.value for name, slider in self.sliders.items()},
            "events": [dict(e) for e in self.trainer.history],
            "last_logs": dict(self.last_logs),
            "refreshes": self.refreshes,
            "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
        }

    def log_frame(self) -> pd.DataFrame:
        """Every value of every step the panel ran (step, name, value), for :func:`plot_loss_terms`."""
        return pd.DataFrame(self.log, columns=["step", "name", "value"])

    # ----------------------------------------------------------------- stepping
    def _one_step(self) -> dict[str, float]:
        with self.step_lock:
            start = time.perf_counter()
            logs = self.trainer.step()
            self.step_seconds.append(time.perf_counter() - start)
            self.steps_run += 1
            self.last_logs = logs
            step = self.trainer.global_step
            self.log.extend({"step": step, "name": name, "value": value} for name, value in logs.items())
            if self.done:
                self.status = "finished"
                self._log_event("panel_finished")
            if step % self.refresh_every == 0 or self.done:
                self.refresh()
            self._show_status()
        return logs

    def run_steps(self, n: int) -> list[dict[str, float]]:
        """Run ``n`` steps now, synchronously (headless use); stops early at ``max_steps``."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if self.status == "running":
            raise RuntimeError("the panel is running in the background; pause() it before run_steps()")
        if self.status in ("stopped", "finished", "error"):
            raise RuntimeError(f"the panel is {self.status}; build a new panel (and trainer) to train more")
        logs = []
        for _ in range(n):
            logs.append(self._one_step())
            if self.status == "finished":
                break
        return logs

    def start(self) -> asyncio.Task | None:
        """Start (or resume) stepping in the background on the running event loop.

        In a notebook the kernel's loop is running, so this returns at once and the cell (and
        every widget) stays responsive. Outside a loop use :meth:`run_steps`. Called from another
        thread than the bound loop's (a kernel subshell), it is scheduled there and returns None.
        """
        if self._elsewhere(self.start):
            return None
        if self.status in ("stopped", "finished", "error"):
            raise RuntimeError(f"the panel is {self.status}; build a new panel (and trainer) to train more")
        if self.status == "running":
            return self.task
        if self.status == "paused" and self.task is not None and not self.task.done():
            self.status = "running"
            self._log_event("panel_resume")
            self._resume.set()  # type: ignore[union-attr]
            self._show_status()
            return self.task
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError as err:
            raise RuntimeError("start() needs a running event loop (a Jupyter kernel has one); use run_steps(n) in scripts") from err
        self._bind_loop(loop)
        self._resume = asyncio.Event()
        self._resume.set()
        self.status = "running"
        self._log_event("panel_start")
        self._show_status()
        self.task = loop.create_task(self._run())
        return self.task

    async def _run(self) -> None:
        try:
            while self.status in ("running", "paused") and not self.done:
                await self._resume.wait()  # type: ignore[union-attr]
                if self.status != "running":
                    break
                self._one_step()
                # The only yield point between steps: widget messages are handled here.
                await asyncio.sleep(0)
        except Exception as err:  # noqa: BLE001 - a failed step is shown in the panel, not lost in the task
            self.error = err
            self.status = "error"
            self.trainer.logger.log_event(self.trainer.global_step, "panel_error", error=f"{type(err).__name__}: {err}")
            self.refresh()
        self._show_status()

    def pause(self) -> None:
        """Finish the current step, then wait; :meth:`start` resumes."""
        if self._elsewhere(self.pause):
            return
        if self.status != "running":
            return
        self.status = "paused"
        if self._resume is not None:
            self._resume.clear()
        self._log_event("panel_pause")
        self._show_status()

    def stop(self) -> None:
        """End the run after the current step (it cannot be resumed) and draw the final figures."""
        if self._elsewhere(self.stop):
            return
        if self.status in ("stopped", "finished", "error"):
            return
        self.status = "stopped"
        self.trainer.stop_requested = True
        if self._resume is not None:
            self._resume.set()  # wakes a paused loop so that it sees the stop
        self._log_event("panel_stop")
        if self.log:
            self.refresh()
        self._show_status()

    async def wait(self) -> None:
        """Await the background run (after :meth:`stop`, or until it finishes)."""
        if self.task is not None:
            await self.task

    # ----------------------------------------------------------------- figures
    def _probe_figure(self):
        trainer = self.trainer
        student = trainer.unwrapped_model()
        hidden, tokens, mask = encode(student, trainer.tokenizer, self.probe)
        options = dict(anchor=1, token=1)
        teacher = getattr(trainer, "teacher", None)
        if teacher is None:
            self.probe_views = (relation_view(self.relation, hidden, tokens, mask, **options),)
            return plot_relation(self.probe_views[0])
        if self._teacher_probe is None:
            # The teacher is frozen: its probe states never change, so encode it once.
            self._teacher_probe = encode(teacher, trainer.tokenizer, self.probe)
        teacher_hidden = self._teacher_probe[0]
        pairs = getattr(trainer, "layer_map", None) or resolve_layer_map("uniform", len(teacher_hidden) - 1, len(hidden) - 1)
        self.probe_views = teacher_student_views(self.relation, teacher_hidden, hidden, tokens, mask, pairs, **options)
        return plot_teacher_student(*self.probe_views)

    def refresh(self) -> None:
        """Redraw the loss curves and the probe's relation map now."""
        start = time.perf_counter()
        with DRAW_LOCK:
            curves = to_png(plot_loss_terms(self.log_frame(), events=self.trainer.history), dpi=self.dpi) if self.log else None
            probe = to_png(self._probe_figure(), dpi=self.dpi)
        if curves is not None:
            self.curves.value = curves
        self.relation_image.value = probe
        self.refreshes += 1
        self.refresh_seconds.append(time.perf_counter() - start)
