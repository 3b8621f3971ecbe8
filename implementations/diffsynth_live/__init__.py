"""The installed DiffSynth-Studio package (`diffsynth`), driven live: real reference code (references env only)."""
