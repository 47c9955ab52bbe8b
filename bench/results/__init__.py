"""Results: the SQLite store of runs, the tables and plots built from it, and the Markdown pages."""
