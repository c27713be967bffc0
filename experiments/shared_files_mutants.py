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
TURNS = S + "test_two_prepares_of_the_same_settings_take_turns_and_leave_one_complete_cache"

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
           '    return samples_dir / f"{name}.npy"\n', (REWRITE,), slow=False),
    Mutant("cache29-reader-ignores-array", "a reader opens <name>.npy whatever array the index names",
           "data/cache.py",
           "            array = array_path(self.cache_dir / SAMPLES_DIR, name, index) if isinstance(index, dict) "
           "else None\n",
           '            array = self.cache_dir / SAMPLES_DIR / f"{name}.npy"\n', (REWRITE,), slow=False),
    Mutant("cache29-no-lock", "prepares of one cache folder do not take turns (no lock)", "data/cache.py",
           "    with file_lock(cache_dir / LOCK_FILE):\n", "    with open(os.devnull):\n", (TURNS,), slow=False),
)
