"""The readers: what each concern's views read from a run, by slice, with one bounded and locked memo shared by the
sessions of a server process (`memo.Memo`). Each reader is built with ``from_run(run)``; views take arrays and
readers' outputs and never open a run; only the readers (and the store) read a run's cache."""
