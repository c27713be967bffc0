"""Mutants of issue 29's mechanisms: files from others are data, a shared folder never changes under a running
job. Read by experiments/mutation_check.py beside science_mutants.py:
    python experiments/mutation_check.py --only cache29-one-folder
"""

from mutation_check import Mutant

S = "tests/test_cache_sharing.py::"
TWO = S + "test_two_settings_share_one_cache_dir_each_complete_each_read_its_own_frames"
OPEN = S + "test_a_reader_open_while_a_job_with_other_settings_prepares_keeps_reading_its_frames"
FLAT = S + "test_an_old_flat_cache_is_read_with_its_settings_and_never_wiped_for_others"
REWRITE = S + "test_an_entry_written_again_for_the_same_settings_leaves_the_old_rows_to_their_readers"
IMPORT_REWRITE = S + "test_the_video_import_writes_an_entry_again_beside_the_old_array"
TURNS = S + "test_two_prepares_of_the_same_settings_take_turns_and_leave_one_complete_cache"


U = "tests/test_untrusted_annotations.py::"
P = "tests/test_path_containment.py::"
CRAFTED = U + "test_a_crafted_pickle_is_refused_naming_the_file_and_the_global_and_never_runs"
NESTED = U + "test_a_global_hidden_in_a_nested_value_is_refused_too"
PREPARE_MTL = U + "test_prepare_check_refuses_a_crafted_mtl_aqa_annotation_file"
PREPARE_JIG = U + "test_prepare_check_refuses_a_crafted_jigsaws_label_file"
EVAL = U + "test_eval_refuses_a_checkpoint_whose_run_settings_name_a_crafted_annotation_file"
EXPLAIN = U + "test_explain_refuses_a_checkpoint_whose_run_settings_name_a_crafted_annotation_file"
FINEDIVING = P + "test_a_finediving_event_that_is_a_path_is_refused_naming_the_key_and_the_file"
JIGSAWS = P + "test_a_jigsaws_video_name_that_is_a_path_is_refused_naming_the_key_and_the_file"
PREPARE_KEY = P + "test_prepare_with_a_crafted_key_creates_nothing_outside_its_output_root"
FOLDER_JOIN = P + "test_the_frame_folder_joiner_refuses_a_folder_outside_the_root_wherever_it_came_from"
VALUE_CLIMBS = P + "test_a_value_that_climbs_is_refused_even_where_the_pattern_lands_it_inside_the_root"
PATTERN_OUT = P + "test_a_pattern_that_leads_outside_the_root_is_refused"
VIDEO_JOIN = P + "test_the_video_path_joiner_refuses_a_video_outside_the_root"
JPEG_OUT = P + "test_the_jpeg_output_creates_nothing_outside_its_root_whatever_the_sample_says"
JPEG_PATTERN = P + "test_a_jpeg_pattern_that_leads_outside_its_root_creates_nothing"


LOCK = "tests/test_run_folder_lock.py::"
REFUSED = LOCK + "test_a_second_run_into_a_running_runs_folder_is_refused_and_changes_nothing"
DDP = LOCK + "test_the_ddp_ranks_of_a_run_share_its_locked_folder"
STORE = LOCK + "test_two_jobs_wanting_one_feature_store_compute_it_once"
EXTERNAL_RANKS = LOCK + "test_only_rank_zero_of_an_externally_launched_job_takes_the_run_folder_lock"
DISK = "tests/test_disk_full.py::"
CKPT = DISK + "test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_checkpoint"
METRICS = DISK + "test_a_full_disk_during_metrics_json_keeps_the_previous_file"
OTHERS = DISK + "test_other_errors_while_writing_are_the_same_one_line"
CLI = DISK + "test_a_run_that_fills_the_disk_ends_with_one_line_and_keeps_its_last_checkpoint"

MUTANTS = (
    Mutant("cache29-one-folder", "every settings' cache is data.cache_dir itself (no folder per settings)",
           "data/cache.py",
           "    if read_json(cache_dir / SETTINGS_FILE) == settings:\n        return cache_dir\n"
           "    return settings_folder(cache_dir, settings)\n",
           "    return cache_dir\n", (TWO, OPEN), slow=False),
    Mutant("cache29-digest-constant", "the settings folder's name ignores the settings", "data/cache.py",
           "    text = json.dumps(settings, sort_keys=True, default=str)\n", '    text = ""\n', (TWO, OPEN),
           slow=False),
    Mutant("cache29-rebuild-in-place", "a folder made for other settings is emptied and rebuilt (the old rule)",
           "data/cache.py",
           "    difference = (settings_difference(recorded, settings) if isinstance(recorded, dict)\n",
           "    (cache_dir / MANIFEST_FILE).unlink(missing_ok=True)\n"
           "    for stale in (cache_dir / SAMPLES_DIR).iterdir():\n"
           "        if stale.suffix in ('.npy', '.json'):\n"
           "            stale.unlink()\n"
           "    write_json(cache_dir / SETTINGS_FILE, settings, indent=1)\n"
           "    return\n"
           "    difference = (settings_difference(recorded, settings) if isinstance(recorded, dict)\n",
           (FLAT,), slow=False),
    Mutant("cache29-flat-not-read", "a flat cache made for the run's settings is not found (older caches lost)",
           "data/cache.py",
           "    if read_json(cache_dir / SETTINGS_FILE) == settings:\n        return cache_dir\n"
           "    return settings_folder(cache_dir, settings)\n",
           "    return settings_folder(cache_dir, settings)\n", (FLAT,), slow=False),
    Mutant("cache29-array-replaced", "an entry written again replaces <name>.npy under readers of the old index",
           "data/cache.py",
           '    if not (samples_dir / f"{name}.json").exists():\n        return samples_dir / f"{name}.npy"\n',
           '    return samples_dir / f"{name}.npy"\n', (REWRITE, IMPORT_REWRITE), slow=False),
    Mutant("cache29-reader-ignores-array", "a reader opens <name>.npy whatever array the index names",
           "data/cache.py",
           "            array = array_path(self.cache_dir / SAMPLES_DIR, name, index) if isinstance(index, dict) "
           "else None\n",
           '            array = self.cache_dir / SAMPLES_DIR / f"{name}.npy"\n', (REWRITE,), slow=False),
    Mutant("cache29-no-lock", "prepares of one cache folder do not take turns (no lock)", "data/cache.py",
           "    with file_lock(cache_dir / LOCK_FILE):\n", "    with open(os.devnull):\n", (TURNS,), slow=False),
    # -------------------- annotation pickles and paths from annotation strings (issue 29)
    # ------------------------------------------------------------------ plain-data unpickler
    Mutant("pickle-any-global", "annotation pickles: find_class allows every global", "data/packaged.py",
           "        if (module, name) not in PLAIN_DATA_GLOBALS:\n", "        if False:\n",
           (CRAFTED, NESTED), slow=False),
    Mutant("pickle-loads", "annotation pickles: load_pickle uses pickle.loads again", "data/packaged.py",
           "        return load_plain_pickle(path, content)\n", "        return pickle.loads(content)\n",
           (PREPARE_MTL, PREPARE_JIG, EVAL, EXPLAIN), slow=False),
    Mutant("pickle-refusal-wrapped", "annotation pickles: the refusal is wrapped as 'not a readable file'",
           "data/packaged.py", "    except RefusedPickleError:\n        raise  # already one line",
           "    except KeyboardInterrupt:\n        raise  # already one line",
           (PREPARE_MTL,), slow=False),
    Mutant("pickle-persistent-id", "annotation pickles: a persistent id is handed back, not refused",
           "data/packaged.py",
           '        raise RefusedPickleError(f"{self.path}: refused to load a persistent id: {PLAIN_DATA}")\n',
           "        return pid\n", (U + "test_a_persistent_id_is_refused",), slow=False),
    Mutant("pickle-any-codec", "annotation pickles: _codecs.encode runs any codec", "data/packaged.py",
           '    if encoding not in ("latin1", "latin-1"):\n', "    if False:\n",
           (U + "test_codecs_encode_builds_latin1_bytes_only",), slow=False),
    Mutant("synthetic-pickle-load", "synthetic frames: load_sample_frames unpickles with pickle.loads",
           "data/synthetic.py",
           'annotations = load_pickle(Path(root) / ANNOTATIONS_DIR / ANNOTATIONS_FILE, "synthetic annotation file")',
           "annotations = pickle.loads((Path(root) / ANNOTATIONS_DIR / ANNOTATIONS_FILE).read_bytes())",
           (U + "test_the_synthetic_frame_reader_refuses_a_crafted_annotation_file",), slow=False),
    # ------------------------------------------------------------------ key parts refused when read
    Mutant("path-part-off", "readers: an event / video name that is a path is accepted",
           "data/annotation_checks.py",
           '    if any(separator in name for separator in PATH_SEPARATORS) or name in NOT_NAMES or "\\0" in name:\n',
           "    if False:\n", (FINEDIVING, JIGSAWS, PREPARE_KEY), slow=False),
    # ------------------------------------------------------------------ joins checked
    Mutant("path-under-outside", "joiner: a joined path that leads outside its root is not refused", "data/frames.py",
           "        if os.path.commonpath([root_text, joined]) != root_text:\n", "        if False:\n",
           (FOLDER_JOIN, PATTERN_OUT, VIDEO_JOIN, JPEG_OUT, JPEG_PATTERN), slow=False),
    Mutant("values-climb", "joiner: a value put into a pattern may climb with '..'", "data/frames.py",
           "            if reason is not None:\n                raise PathOutsideRootError(f\"{what}: its",
           "            if False:\n                raise PathOutsideRootError(f\"{what}: its",
           (VALUE_CLIMBS,), slow=False),
    Mutant("jpeg-source-folder", "JpegFolderSource.folder joins without the check", "data/frames.py",
           'return path_under(self.root, sample.frames, f"the frame folder of sample {sample.key_str}")',
           "return self.root / sample.frames", (FOLDER_JOIN,), slow=False),
    Mutant("jpeg-source-path", "JpegFolderSource.path joins without the checks", "data/frames.py",
           "        return fill_pattern(self.root, self.pattern, {\"folder\": sample.frames, \"frame\": int(frame)},\n"
           "                            f\"frame {frame} of sample {sample.key_str}\")\n",
           "        return self.root / self.pattern.format(folder=sample.frames, frame=int(frame))\n",
           (VALUE_CLIMBS, PATTERN_OUT), slow=False),
    Mutant("video-source-path", "VideoFileSource.path joins without the check", "data/frames.py",
           'return path_under(self.root, video_name(self.pattern, sample), f"the video of sample {sample.key_str}")',
           "return self.root / video_name(self.pattern, sample)", (VIDEO_JOIN,), slow=False),
    Mutant("plan-videos-path", "plan_videos joins the video path without the check", "data/video_import.py",
           'path_under(videos_dir, name, f"the video of sample {items[0][1].key_str}")',
           "Path(videos_dir) / name", (VIDEO_JOIN,), slow=False),
    Mutant("jpeg-output-folders", "video import: JPEG folders are created without the check", "data/video_import.py",
           'folders = {path_under(root, sample.frames, f"the JPEG folder of sample {sample.key_str}"): sample.frames',
           "folders = {root / sample.frames: sample.frames", (JPEG_OUT,), slow=False),
    Mutant("jpeg-output-files", "video import: JPEG files (and their folders) are named without the check",
           "data/video_import.py",
           'fill_pattern(root, jpeg.pattern, {"folder": gather.sample.frames, "frame": number}, what))',
           "root / jpeg.pattern.format(folder=gather.sample.frames, frame=number))", (JPEG_PATTERN,), slow=False),
    # -------------------- run folder lock, feature store lock, disk full (issue 29)
    # ------------------------------------------------------------------ the run folder's lock
    Mutant("run-lock-none", "run folder lock: t2cr-train takes no lock (a second run writes into a running one's folder)",
           "run.py", "            self.lock = lock_run_folder(pin_run_dir(config))\n",
           "            pin_run_dir(config)\n", (REFUSED,)),
    Mutant("run-lock-late", "run folder lock: taken when the job starts, after Hydra wrote .hydra/ and the log",
           "run.py", "    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:\n",
           "    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:\n", (REFUSED,)),
    Mutant("run-lock-every-rank", "run folder lock: every DDP rank takes it (rank 1 is refused by rank 0's lock)",
           "run.py", "        if not is_rank_zero():\n            return\n        try:\n",
           "        if False:\n            return\n        try:\n", (DDP, EXTERNAL_RANKS)),
    # ------------------------------------------------------------------ the feature store's lock
    Mutant("store-lock-none", "feature store: jobs wanting one store each compute it (no lock between jobs)",
           "features.py",
           "        between_jobs = computing_store(path) if trainer.global_rank == 0 else contextlib.nullcontext()\n",
           "        between_jobs = contextlib.nullcontext()\n", (STORE,)),
    Mutant("store-lock-other-name", "feature store: the lock is one per cache folder, not named after the store",
           "features.py", '    lock = file_lock(path.with_name(path.name + ".lock"))\n',
           '    lock = file_lock(path.with_name("features.lock"))\n', (STORE,)),
    # ------------------------------------------------------------------ disk full
    Mutant("write-failed-oserror", "disk full: an OSError while writing propagates as it is (no folder, no free space)",
           "io.py", "        raise write_failed(path, error.strerror or str(error), error.errno, existed, elsewhere) from error\n",
           "        raise\n", (METRICS, OTHERS), slow=False),
    Mutant("write-failed-torch", "disk full: torch's failed checkpoint write stays a RuntimeError with a traceback",
           "io.py", "        if not _torch_writer_failed(error):\n", "        if True:\n", (CKPT, CLI)),
    Mutant("write-probe", "disk full: a failed torch write does not say why (no probe for the errno)",
           "io.py", "        found = _write_probe(path.parent)", "        found = None", (CKPT,), slow=False),
    Mutant("checkpoint-advice", "disk full: a checkpoint's line does not name hydra.run.dir",
           "reliability.py", "            raise failed.advising(RUN_DIR_ELSEWHERE) from failed.__cause__\n",
           "            raise\n", (CKPT,), slow=False),
    Mutant("cli-write-failed", "disk full: t2cr-train prints a traceback instead of the one line",
           "cli/common.py", "    if isinstance(error, (UserError, MissingPackage, WriteFailed)):\n",
           "    if isinstance(error, (UserError, MissingPackage)):\n", (CLI, METRICS)),
)
