"""The studies: one run, a sweep, the tutorial reproduction; their executors and the files they store."""
