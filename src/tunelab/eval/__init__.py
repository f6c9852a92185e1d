"""Scoring models: metrics, tasks, comparisons, fairness probes and reports.

- ``rows``, ``runner``: the rows of a task, read and checked once, and the task as a
  function of rows; ``tasks``, ``classify``, ``regress``, ``generate_tasks``,
  ``perplexity``, ``bbq``: what each task asks and how it is scored;
- ``callables``: a loaded model as the callables a task takes (batched generation
  through the serving engine, choice scoring and NLL through the training loss);
- ``during_training``: the hook that runs a config's ``eval_tasks`` at validations;
- ``compare``, ``slices``, ``fairness``, ``terms``: paired bootstrap comparisons,
  slices, counterfactual and group-fairness probes;
- ``report``, ``plots``, ``review``: the HTML report and the human review sheet.

It sits above training and the engine (it uses both) and never loads a model by
itself except through ``callables.load_callables``; it never prints.
"""
