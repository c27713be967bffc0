"""Mutation check of the README's "When something goes wrong" promises and of the science code: disable each
mechanism in a temporary copy of `src/` and show that a test guarding it fails. The mutants of the losses,
the forward pass, the vote, the score scaling, the metrics, the splits, the feature-store key and the
baselines live in `science_mutants.py` beside this script; their guard tests are all fast.

    python experiments/mutation_check.py                      # every mutant (about 1 h on 2 CPU cores)
    python experiments/mutation_check.py --fast               # only the mutants whose guard tests are fast
    python experiments/mutation_check.py --only sigterm-save,atomic-write
    python experiments/mutation_check.py --baseline           # first, every guard test on the unmutated copy
    python experiments/mutation_check.py --output /tmp/mutation_check_output.txt

Not part of `make test` (most guard tests train in subprocesses). Each mutant is one exact text replacement
in one file of a fresh copy of `src/` (the working tree is never edited: a mutant whose text is gone from
the source is reported as "stale", not as survived). The copy comes first on PYTHONPATH, ahead of the
editable install, for pytest and for every process the tests start; an import check confirms that `t2cr`
and the mutated module are imported from the copy before the guard tests run (from this repository's
`tests/`). A mutant is killed when at least one guard test fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINKED = ("conf", "experiments")  # read through paths relative to the package (t2cr.run.CONF_DIR, ...)


@dataclass(frozen=True)
class Mutant:
    name: str
    mechanism: str
    file: str  # under src/t2cr (../hydra_plugins/... for the launcher plugin)
    old: str
    new: str
    tests: tuple[str, ...]
    slow: bool = True


SCIENCE = Path(__file__).resolve().parent / "science_mutants.py"  # the losses, model, vote, metrics, baselines
SHARED_FILES = Path(__file__).resolve().parent / "shared_files_mutants.py"  # others' files and shared folders (issue 29)
REL = "tests/test_reliability.py::"
OPTIONAL = "tests/test_optional_packages.py::"
RESUME = "tests/test_resume_exact.py::test_a_killed_run_resumes_to_the_uninterrupted_result"
GATHER = "tests/test_distributed.py::test_gather_batch_values_and_gradients_equal_the_single_process_computation"
BATCHNORM = "tests/test_distributed.py::test_global_batchnorm_on_2_processes_is_batchnorm_on_the_global_batch"
MUTANTS = (
    # ------------------------------------------------------------------ SIGTERM / SIGINT save
    Mutant("sigterm-save", "SIGTERM save: SaveOnSigterm.on_exception saves nothing", "reliability.py",
           "            trainer.save_checkpoint(str(self.last_path))  # every rank calls it; rank 0 writes\n",
           "            pass\n",
           (RESUME + "[1p-group-sigterm-later-epoch]",), slow=False),
    Mutant("sigterm-stop", "SIGTERM save: the requested stop is never acted on", "reliability.py",
           "        if received:\n            # before the batch", "        if False:\n            # before the batch",
           (REL + "test_a_stop_signal_stops_before_the_next_batch_and_says_which",
            RESUME + "[1p-group-sigterm-later-epoch]"), slow=False),
    Mutant("sigint", "SIGINT save: Ctrl-C is left to Lightning (stops without saving)", "reliability.py",
           "    SIGNALS = (signal.SIGTERM, signal.SIGINT)\n", "    SIGNALS = (signal.SIGTERM,)\n",
           (REL + "test_a_stop_signal_stops_before_the_next_batch_and_says_which", RESUME + "[1p-ctrl-c]")),
    Mutant("stop-agreement", "SIGTERM save: the ranks do not agree on the stop (each stops on its own signal)",
           "reliability.py", "            received = pl_module.agreed_stop\n", "            pass\n",
           (RESUME + "[2p-sigterm-rank1-only]",)),
    # ------------------------------------------------------------------ exact resume
    Mutant("loader-eager", "exact resume: loaders start reading when their iterator is made", "data/loading.py",
           "        return _StartsOnFirstBatch(super().__iter__)\n", "        return super().__iter__()\n",
           ("tests/test_loading.py::test_the_epoch_and_skip_set_after_the_iterator_is_made_are_the_ones_read",
            RESUME + "[1p-group-sigterm-later-epoch]", RESUME + "[2p-group-sigkill-after-best-checkpoint]"),
           slow=False),
    Mutant("worker-signals", "group signal: loader workers die of SIGTERM / SIGINT", "data/loading.py",
           "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n",
           "    pass\n",
           ("tests/test_loading.py::test_loader_workers_leave_sigterm_and_sigint_to_the_training_process",
            RESUME + "[1p-group-sigterm-later-epoch]"), slow=False),
    Mutant("worker-exit", "group signal: a process waits for its workers at exit (they ignore SIGTERM)",
           "data/loading.py", "            atexit.register(_end_workers, weakref.ref(iterator), list(iterator._workers))\n",
           "            pass\n",
           ("tests/test_loading.py::test_a_process_ends_without_waiting_for_its_workers",), slow=False),
    Mutant("last-versioned", "exact resume: a resumed run writes last-v1.ckpt beside a SIGTERM checkpoint",
           "reliability.py", "save_on_train_epoch_end=True,\n                         enable_version_counter=False)",
           "save_on_train_epoch_end=True,\n                         enable_version_counter=True)",
           (RESUME + "[1p-sigterm-first-epoch]",)),
    Mutant("step-seed", "exact resume: the global generators are not seeded per step (dropout)", "reliability.py",
           "        torch.manual_seed(step_seed(self.seed, trainer.global_step, trainer.global_rank))\n",
           "        pass\n",
           (REL + "test_each_step_draws_from_generators_seeded_by_seed_step_and_rank",
            RESUME + "[1p-dropout-sigterm]")),
    # ------------------------------------------------------------------ torch versions
    Mutant("gather-fallback", "older torch: the fallback all-gather's backward keeps only this process's gradient",
           "distributed.py", "        dist.all_reduce(grad)\n        return grad[ctx.start", "        return grad[ctx.start",
           (GATHER + "[fallback]",), slow=False),
    Mutant("cudnn-tf32", "precision: highest leaves cuDNN convolutions in TF32", "cli/common.py",
           '    torch.backends.cudnn.allow_tf32 = value != "highest"\n', "",
           ("tests/test_run_settings.py::test_matmul_precision_sets_matmuls_and_cudnn_convolutions_alike",),
           slow=False),
    # ------------------------------------------------------------------ cluster runs
    Mutant("slurm-resume", "SLURM: a requeued job with resume=false starts again over its last.ckpt", "devices.py",
           '    if str(resume) != "auto":\n', "    if False:\n",
           ("tests/test_configs.py::test_slurm_launcher_refuses_what_it_cannot_reserve",), slow=False),
    Mutant("port-race", "DDP rendezvous: the chosen port is released before the ranks bind it", "launch.py",
           "    return LocalRanks(children, saved, store)\n", "    return LocalRanks(children, saved)\n",
           ("tests/test_launch_watchdog.py::test_the_rendezvous_port_stays_bound_from_its_choice_to_the_end_of_the_job",),
           slow=False),
    Mutant("submitit-launcher-required", "optional packages: the gpu_slots plugin needs hydra-submitit-launcher to "
           "import", "../hydra_plugins/t2cr_launchers/gpu_slots.py", "except ImportError as missing:",
           "except OSError as missing:",
           (OPTIONAL + "test_the_gpu_slots_launcher_without_hydra_submitit_launcher_imports_and_refuses_in_one_line",),
           slow=False),
    Mutant("bn-local-statistics", "GlobalBatchNorm: each process normalises with its own statistics",
           "distributed.py", "        dist.all_reduce(local)\n", "",
           (BATCHNORM,), slow=False),
    Mutant("bn-local-backward", "GlobalBatchNorm: the backward's sums are this process's only",
           "distributed.py", "        dist.all_reduce(sums)\n", "",
           (BATCHNORM,), slow=False),
    Mutant("bn-two-collectives", "GlobalBatchNorm: the count travels in a collective of its own",
           "distributed.py", "        dist.all_reduce(local)\n",
           "        dist.all_reduce(local)\n        dist.all_reduce(local[-1:].clone())\n",
           (BATCHNORM,), slow=False),
    # ------------------------------------------------------------------ host reads
    Mutant("lightning-sigterm-broadcast", "host reads: Lightning's own per-step SIGTERM broadcast stays on",
           "reliability.py", "            epoch_loop._broadcast_sigterm_tensor = _nothing\n", "            pass\n",
           ("tests/test_distributed.py::test_a_training_step_reads_the_host_once[2]",), slow=False),
    Mutant("progress-bar-read", "host reads: the progress bar reads the logged total loss again", "module.py",
           "on_step=True, on_epoch=True, batch_size=size)\n",
           'on_step=True, on_epoch=True, batch_size=size,\n                     prog_bar=name == "total")\n',
           ("tests/test_distributed.py::test_a_training_step_reads_the_host_once[1]",), slow=False),
    # ------------------------------------------------------------------ atomic write
    Mutant("atomic-write", "atomic write: atomic_write writes the target itself", "io.py",
           "        write(temporary)\n        _fsync(temporary)\n        size = temporary.stat().st_size\n"
           "        os.replace(temporary, path)\n        return size\n",
           "        write(path)\n        return path.stat().st_size\n",
           (REL + "test_failed_checkpoint_write_leaves_the_previous_one",
            "tests/test_io.py::test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary"), slow=False),
    Mutant("atomic-checkpoint", "atomic write: AtomicCheckpointIO saves in place", "reliability.py",
           "        atomic_write(path, lambda temporary: torch.save(checkpoint, temporary))\n",
           "        torch.save(checkpoint, path)\n",
           (REL + "test_failed_checkpoint_write_leaves_the_previous_one",), slow=False),
    # ------------------------------------------------------------------ NaN guard
    Mutant("nan-guard", "NaN guard: check_finite accepts everything", "reliability.py",
           "    if bool(torch.isfinite(values).all()):\n        return\n", "    return\n",
           (REL + "test_non_finite_loss_names_step_and_terms",
            REL + "test_non_finite_loss_stops_and_keeps_last_checkpoint")),
    # ------------------------------------------------------------------ resume position
    Mutant("resume-position", "resume position: a mid-epoch resume skips no batch", "reliability.py",
           "            sampler.skip_batches(self.done)\n", "            pass\n",
           (RESUME + "[1p-group-sigterm-later-epoch]",), slow=False),
    Mutant("resume-from-scratch", "resume: resume=true silently trains from scratch", "cli/train.py",
           "trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)",
           "trainer.fit(module, datamodule=datamodule, ckpt_path=None)",
           ("tests/test_framework.py::test_resume_gives_the_uninterrupted_result",
            RESUME + "[2p-group-sigkill-after-best-checkpoint]")),
    # ------------------------------------------------------------------ rank watchdog
    Mutant("watchdog-rank0", "rank watchdog: rank 0 does not watch the ranks it started", "launch.py",
           '    """If a child rank dies with an error, end this process too instead of hanging in a collective."""\n',
           '    """If a child rank dies with an error, end this process too instead of hanging in a collective."""\n'
           "    return\n",
           (REL + "test_a_failing_rank_ends_every_rank[1-step]", REL + "test_a_failing_rank_ends_every_rank[1-start]")),
    Mutant("watchdog-ranks", "rank watchdog: the started ranks do not watch rank 0", "launch.py",
           "    parent = os.environ.get(PARENT_PID_VAR)\n    if not parent:\n        return\n",
           "    parent = os.environ.get(PARENT_PID_VAR)\n    return\n",
           (REL + "test_a_failing_rank_ends_every_rank[0-step]", REL + "test_a_failing_rank_ends_every_rank[0-start]")),
    # ------------------------------------------------------------------ data check
    Mutant("data-check", "data check: check_samples finds no problem", "data/check.py",
           "    return [problem for found in results for problem in found]\n", "    return []\n",
           ("tests/test_layouts.py::test_missing_frame_refuses_to_start_naming_the_path",
            "tests/test_layouts.py::test_missing_folder_refuses_to_start_naming_the_path",
            "tests/test_cache_and_check.py::test_check_without_decode_finds_missing_files_only",
            "tests/test_cache_and_check.py::test_check_with_decode_finds_the_corrupt_frame"), slow=False),
    # ------------------------------------------------------------------ issue 19's other tests
    Mutant("ddp-store-keys", "feature store: DDP gathers features under the wrong video ids", "features.py",
           "    return (torch.cat([part[:n] for part, n in zip(all_ids, sizes)]),\n",
           "    return (torch.cat([part[:n] for part, n in zip(all_ids, sizes)]).flip(0),\n",
           ("tests/test_framework.py::test_fast_ablation_mode_under_ddp_matches_a_single_process",)),
    Mutant("ddp-store-broadcast", "feature store: a loaded store reaches rank 0 only", "features.py",
           "    dist.broadcast(features, 0)\n    return ids, features\n",
           "    dist.broadcast(features, 0)\n    return ids, features if rank == 0 else torch.zeros_like(features)\n",
           ("tests/test_framework.py::test_fast_ablation_mode_under_ddp_matches_a_single_process",)),
    Mutant("resize-nearest", "resize: nearest neighbour instead of antialiased bilinear", "data/transforms.py",
           'mode="bilinear", align_corners=False, antialias=True)', 'mode="nearest")',
           ("tests/test_cache_and_check.py::test_resize_frames_is_an_antialiased_bilinear_resize_rounded",),
           slow=False),
    Mutant("resize-aliased", "resize: bilinear without antialiasing", "data/transforms.py",
           "antialias=True)", "antialias=False)",
           ("tests/test_cache_and_check.py::test_resize_frames_is_an_antialiased_bilinear_resize_rounded",),
           slow=False),
    Mutant("blur-box", "Gaussian blur: a box kernel", "explain.py",
           "    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))\n", "    kernel = torch.ones_like(offsets)\n",
           ("tests/test_explain.py::test_gaussian_blur",), slow=False),
    Mutant("blur-zero-edges", "Gaussian blur: zero padding instead of replicated edges", "explain.py",
           'F.pad(flat, (radius, radius, 0, 0), mode="replicate")', 'F.pad(flat, (radius, radius, 0, 0))',
           ("tests/test_explain.py::test_gaussian_blur",), slow=False),
)


# ----------------------------------------------------------------------------------------- running
def make_copy(root: Path) -> Path:
    """src/ copied (no bytecode), conf/ and experiments/ linked: the layout the package expects."""
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in LINKED:
        (root / name).symlink_to(REPO / name, target_is_directory=True)
    return root / "src"


def environment(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_import(src: Path, module_file: str | None) -> None:
    """Fail unless `t2cr` (and the mutated module) resolve to the copy under `src`."""
    module = None if module_file is None else ".".join(
        (src / "t2cr" / module_file).resolve().relative_to(src.resolve()).with_suffix("").parts)
    code = "import importlib, t2cr; print(t2cr.__file__)"
    if module:
        code += f"; print(importlib.import_module({module!r}).__file__)"
    out = subprocess.run([sys.executable, "-c", code], env=environment(src), cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    for path in out:
        if not Path(path).resolve().is_relative_to(src.resolve()):
            raise RuntimeError(f"imported {path}, not the copy under {src}")


def run_tests(src: Path, tests: tuple[str, ...], basetemp: Path, timeout: float,
              log: Path) -> tuple[str, list[str], float]:
    """(status, failing tests, seconds); status: passed | failed | timeout | error (rc). pytest's output
    goes to `log`."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", f"--basetemp={basetemp}",
               *tests]
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, env=environment(src), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        log.write_text(output)
        return "timeout", [], time.monotonic() - start
    seconds = time.monotonic() - start
    log.write_text(output)
    failing = [m.group(2) for m in re.finditer(r"^(FAILED|ERROR) (\S+)", output, re.MULTILINE)]
    if process.returncode == 0:
        return "passed", [], seconds
    if process.returncode == 1 and failing:
        return "failed", failing, seconds
    sys.stderr.write(output[-4000:])
    return f"error (rc {process.returncode})", failing, seconds


def short(test: str) -> str:
    return test.split("::", 1)[1] if "::" in test else test


def _extra_mutants(path: Path) -> tuple[Mutant, ...]:
    """The MUTANTS of a developer's own Python file (imported as a module, as pytest imports a conftest)."""
    import importlib.util

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # its `from mutation_check import Mutant`
    spec = importlib.util.spec_from_file_location(f"mutants_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.MUTANTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutant names")
    parser.add_argument("--fast", action="store_true", help="only mutants whose guard tests are fast")
    parser.add_argument("--baseline", action="store_true", help="run the guard tests on an unmutated copy first")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per mutant")
    parser.add_argument("--output", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--extra", type=Path, help="a Python file defining MUTANTS (Mutant entries, `from "
                        "mutation_check import Mutant`) to check with these, e.g. new ones before they move here")
    parser.add_argument("--logs", type=Path, help="folder for pytest's output per run (default: a new "
                        "temporary folder, kept)")
    args = parser.parse_args(argv)
    known = (MUTANTS + _extra_mutants(SCIENCE) + _extra_mutants(SHARED_FILES)
             + (_extra_mutants(args.extra) if args.extra else ()))
    chosen = [m for m in known if (not args.fast or not m.slow)]
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {m.name for m in known}
        if unknown:
            parser.error(f"unknown mutants {sorted(unknown)}; known: {[m.name for m in known]}")
        chosen = [m for m in chosen if m.name in names]

    lines: list[str] = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    logs = args.logs or Path(tempfile.mkdtemp(prefix="t2cr-mutation-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    report(f"mutation check of {REPO} ({len(chosen)} mutants), {time.strftime('%Y-%m-%d %H:%M:%S')}; "
           f"pytest output in {logs}")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="t2cr-mutants-"))
    try:
        if args.baseline:
            src = make_copy(work / "baseline")
            check_import(src, None)
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            status, failing, seconds = run_tests(src, tests, work / "baseline" / "pytest", args.timeout,
                                                 logs / "baseline.txt")
            report(f"baseline (unmutated copy): {status} in {seconds:.0f} s"
                   + (f"; failing: {', '.join(map(short, failing))}" if failing else ""))
        for mutant in chosen:
            root = work / mutant.name
            src = make_copy(root)
            target = src / "t2cr" / mutant.file
            text = target.read_text()
            if text.count(mutant.old) != 1:
                rows.append((mutant, "stale", [], 0.0))
                report(f"{mutant.name}: STALE (its text occurs {text.count(mutant.old)} times in {mutant.file})")
                continue
            target.write_text(text.replace(mutant.old, mutant.new))
            check_import(src, mutant.file)
            status, failing, seconds = run_tests(src, mutant.tests, root / "pytest", args.timeout,
                                                 logs / f"{mutant.name}.txt")
            verdict = {"failed": "killed", "timeout": "killed (timeout)", "passed": "SURVIVED"}.get(status, status)
            rows.append((mutant, verdict, failing, seconds))
            report(f"{mutant.name}: {verdict} in {seconds:.0f} s"
                   + (f"; failing: {', '.join(map(short, failing))}" if failing else ""))
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    report("")
    report("| mutant | what it disables | guard tests | failing tests | result |")
    report("|---|---|---|---|---|")
    for mutant, verdict, failing, _ in rows:
        report(f"| {mutant.name} | {mutant.mechanism} | {'<br>'.join(map(short, mutant.tests))} | "
               f"{'<br>'.join(map(short, failing)) or '-'} | {verdict} |")
    survived = [m.name for m, verdict, _, _ in rows if not verdict.startswith("killed")]
    report("")
    report(f"{len(rows) - len(survived)} of {len(rows)} mutants killed"
           + (f"; not killed: {', '.join(survived)}" if survived else ""))
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
