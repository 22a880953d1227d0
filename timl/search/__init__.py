"""Searches: a table row whose cells hold search spaces, searched by ``python -m timl.tune`` with Optuna as the
engine and TIML's executors training the trials.

- :mod:`~timl.search.space`: the spaces a cell may hold (``loguniform(1e-5,1e-2)``, ``choice(A,B)``, ...);
- :mod:`~timl.search.trial`: a trial as the row it trains knows it (its study, its number);
- :mod:`~timl.search.study`: the options, the study in its storage, its sampler and pruner;
- :mod:`~timl.search.searches`: search rows in the table loop (trials asked, handed to the executor, told);
- :mod:`~timl.search.pruning`: the Keras callback that reports each epoch and stops a pruned trial;
- :mod:`~timl.search.summary`: the search run's record (counts, best trial, Optuna's plots).
"""
