"""Whether bf16 training runs, and pays, on this CPU for one net and patch: checked in a child process.

On CPUs with AMX tiles, oneDNN's bf16 convolutions crash the process ("double free or corruption") or hang in the
weight gradient for some patch shapes where float32 runs (torch 2.13: the 6 x 200 x 200 patch of a 6-slice stack
of 8:1:1 spacing, 8 x 160 x 160 of an isotropic stack; the forward pass alone ran on every shape tried). A crash
cannot be caught in the process that trains, and the user's window would go with it. So when a net first trains
on a patch on a CPU, a child process times steps of the same net on random data of that patch, in float32 and in
bf16, while the training steps run in float32: they go on in bf16 only where the child's bf16 steps finished,
within :data:`BF16_PATIENCE` times a float32 step, and were faster. The verdict is kept for the process.

Run as ``python -m napari_sparseseg.core.bf16_check REQUEST_JSON PARENT_PID`` it is that child: it prints
``float32 SECONDS`` and then ``bfloat16 SECONDS``, each the second of two steps (the first builds oneDNN's
kernels), and ends itself when its parent would no longer wait for it or is gone (a hung child would spin on).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from .events import Notice

__all__ = ["BF16_PATIENCE", "START_SECONDS", "Verdict", "bf16_for_training", "run_check", "training_verdict"]

#: Seconds the child may take to start and time its float32 steps (importing torch included).
START_SECONDS = 120.0
#: The bf16 steps may take this many times the float32 steps (and at least :data:`MIN_WAIT` seconds) before
#: they count as hung.
BF16_PATIENCE = 10.0
#: Least seconds the bf16 steps are waited for.
MIN_WAIT = 15.0
#: Seconds between the child's looks at whether its parent is still there and its time is not up.
WATCH_SECONDS = 0.5

_VERDICTS: dict[str, Verdict] = {}
_CHECKING: dict[str, threading.Thread] = {}
_CHILDREN: set[subprocess.Popen] = set()
_TOLD: set[str] = set()
#: Name of the threads that read a child's output.
READER_NAME = "bf16-check-output"

_LOCK = threading.Lock()


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check.

    Attributes
    ----------
    usable : bool
        Whether training steps may run in bf16.
    reason : str
        Why not (empty when usable), in words for the user.
    failed : bool
        Whether bf16 failed (the child died, hung or could not be run), not merely was slower: what the user is
        told of.
    float32_seconds, bf16_seconds : float or None
        A step's seconds in each precision, where the child reported them.
    """

    usable: bool
    reason: str = ""
    failed: bool = False
    float32_seconds: float | None = None
    bf16_seconds: float | None = None


def _reader(stream, lines: queue.Queue) -> None:
    """Queue the child's output ``stream`` line by line, then None; close the pipe at its end (the child has exited
    or been killed: nothing else reads it, and an unclosed pipe is an open file until the garbage collector's)."""
    try:
        for line in stream:
            lines.put(line)
    finally:
        stream.close()
        lines.put(None)


def _next_timing(lines: queue.Queue, name: str, deadline: float) -> float | None:
    """The seconds of the child's line ``name SECONDS`` that arrives before ``deadline``; None if it died first or
    the deadline passed."""
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            return None
        if line is None:
            return None
        word, _, value = line.strip().partition(" ")
        if word == name:
            try:
                return float(value)
            except ValueError:
                return None


def run_check(command: Sequence[str], *, start_seconds: float = START_SECONDS, patience: float = BF16_PATIENCE,
              min_wait: float = MIN_WAIT) -> Verdict:
    """Run the child ``command`` (which prints ``float32 S`` then ``bfloat16 S``) and judge bf16 by its lines.

    The child is killed when it has not reported within its time; nothing it does can harm this process.
    """
    try:
        child = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 stdin=subprocess.DEVNULL)
    except OSError as error:
        return Verdict(False, f"its check could not start ({error})", True)
    with _LOCK:
        _CHILDREN.add(child)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(child.stdout, lines), name=READER_NAME, daemon=True).start()
    try:
        fp32 = _next_timing(lines, "float32", time.monotonic() + start_seconds)
        if fp32 is None:
            return Verdict(False, "its check did not time a float32 step", True)
        wait = max(min_wait, patience * fp32)
        bf16 = _next_timing(lines, "bfloat16", time.monotonic() + wait)
        if bf16 is None:
            try:  # its output ended (it died) or the wait ran out (it hangs)
                code = child.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                code = None
            what = f"stopped the check (exit code {code})" if code not in (None, 0) else \
                f"did not finish within {wait:.0f} s"
            return Verdict(False, f"a bf16 step {what}", True, fp32)
        if bf16 >= fp32:
            return Verdict(False, f"a bf16 step was not faster ({bf16:.2f} s against {fp32:.2f} s in float32)",
                           False, fp32, bf16)
        return Verdict(True, "", False, fp32, bf16)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        with _LOCK:
            _CHILDREN.discard(child)


@atexit.register
def _kill_children() -> None:
    """At the exit of this process, a check still running (its thread is a daemon) ends with it."""
    with _LOCK:
        children = list(_CHILDREN)
    for child in children:
        if child.poll() is None:
            child.kill()


def _key(model, spacing: Sequence[float], patch: Sequence[int], batch: int, threads: int) -> str:
    """The child's request for ``model`` (a :class:`~.net.UNet3D`: its config and ``spacing`` rebuild it), as JSON:
    also the key its verdict is kept under."""
    return json.dumps({"model": asdict(model.config), "spacing": [float(s) for s in spacing],
                       "patch": [int(p) for p in patch], "batch": int(batch), "threads": int(threads)}, sort_keys=True)


def _check(key: str) -> None:
    if getattr(sys, "frozen", False):  # a frozen application's executable is the application, not Python
        verdict = Verdict(False, "bf16 could not be checked in a frozen application", True)
    else:
        verdict = run_check([sys.executable, "-m", __name__, key, str(os.getpid())])
    with _LOCK:
        _VERDICTS[key] = verdict
        _CHECKING.pop(key, None)


def training_verdict(model, spacing: Sequence[float], patch: Sequence[int], batch: int, threads: int, *,
                     wait: bool = False) -> Verdict | None:
    """Whether ``model``'s training steps may run in bf16 on this CPU, for ``batch`` patches of ``patch`` on
    ``threads`` torch threads; None while the check runs (in a thread, started by the first call for that net,
    patch, batch and thread count; its verdict is kept for the process). ``wait``: wait for the verdict."""
    return _verdict(_key(model, spacing, patch, batch, threads), wait)


def _verdict(key: str, wait: bool = False) -> Verdict | None:
    """:func:`training_verdict` of the request ``key`` (:func:`_key`)."""
    with _LOCK:
        if key not in _VERDICTS and key not in _CHECKING:
            _CHECKING[key] = threading.Thread(target=_check, args=(key,), name="bf16-check", daemon=True)
            _CHECKING[key].start()
        thread = _CHECKING.get(key)
    if wait and thread is not None:
        thread.join()
    return _VERDICTS.get(key)


def bf16_for_training(amp: bool, device, model, spacing: Sequence[float], patch: Sequence[int], batch: int,
                      notices: deque) -> bool:
    """Whether a training step runs in bf16: ``amp`` (bf16 configured and fast on ``device``, see
    :func:`~.device.fast_bf16`), and on a CPU only once :func:`training_verdict` allows it for ``model``,
    ``patch`` and ``batch`` on torch's current thread count: steps run in float32 while the check runs. The first
    time in the process a check finds bf16 failing (not merely slower), a :class:`~.events.Notice` saying why goes to
    ``notices``."""
    if not amp or torch.device(device).type != "cpu":
        return amp
    key = _key(model, spacing, patch, batch, torch.get_num_threads())
    verdict = _verdict(key)
    if verdict is None:
        return False
    if verdict.failed:
        with _LOCK:
            first = key not in _TOLD
            _TOLD.add(key)
        if first:
            size = " x ".join(map(str, patch))
            notices.append(Notice(f"training in float32: on this CPU, for patches of {size}, {verdict.reason}",
                                  "info"))
    return verdict.usable


def _watch(parent: int, deadline: list[float]) -> None:
    """The child's watchdog: end the child (all its threads, a hung bf16 step too) when its parent is gone or
    ``deadline[0]`` (a :func:`time.monotonic` instant) has passed: then nobody waits for its lines any more."""
    while os.getppid() == parent and time.monotonic() < deadline[0]:
        time.sleep(WATCH_SECONDS)
    os._exit(3)


def _time_steps(request: dict, parent: int) -> None:
    """The child: time a training step of the requested net on random data, in float32 and then in bf16.

    ``request`` is :func:`_key`'s: the net's config and spacing, the patch ``(Z, Y, X)``, the batch ``B`` and the
    thread count. The input is ``(B, C, Z, Y, X)`` standard normal noise, the target ``(B, Z, Y, X)`` random classes,
    the loss plain cross-entropy: the convolutions are the net's, which is what crashed. It ends itself when
    :func:`run_check` would stop waiting for it, or when ``parent`` (the pid that started it) is gone.
    """
    from .config import ModelConfig
    from .net import UNet3D

    deadline = [time.monotonic() + START_SECONDS]
    threading.Thread(target=_watch, args=(parent, deadline), daemon=True).start()
    torch.set_num_threads(int(request["threads"]))
    config = ModelConfig(**request["model"])
    model = UNet3D(config, request["spacing"]).train()
    image = torch.randn(int(request["batch"]), config.in_channels, *request["patch"])
    target = torch.randint(0, config.num_classes, (int(request["batch"]), *request["patch"]))
    for name, enabled in (("float32", False), ("bfloat16", True)):
        for _ in range(2):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                logits = model(image)
            torch.nn.functional.cross_entropy(logits.float(), target).backward()
            model.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - t0
        print(f"{name} {seconds:.4f}", flush=True)
        if not enabled:  # the parent now waits this long for the bf16 steps; a second more and it has gone
            deadline[0] = time.monotonic() + max(MIN_WAIT, BF16_PATIENCE * seconds) + 1.0


if __name__ == "__main__":
    _time_steps(json.loads(sys.argv[1]), int(sys.argv[2]))
