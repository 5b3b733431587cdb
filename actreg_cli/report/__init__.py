"""What is made from stored results: summaries, tables, figures, reports, the run index, exports."""
