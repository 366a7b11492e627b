"""The report layer: pure functions from the evaluated tables to figures and markdown.

- :mod:`.context`: what a section gets (:class:`~.context.Context`) and what it is
  (:class:`~.context.Section`); :mod:`.sections` discovers every module's ``SECTIONS``;
- one module per study, or per family of similar studies, owning its published numbers
  (read from ``references/``), tables, figures and text: :mod:`.experiment`,
  :mod:`.augmentation`, :mod:`.curriculum`, :mod:`.architecture`, :mod:`.optimizer`,
  :mod:`.data_fraction`, :mod:`.batch_size`, :mod:`.multivariate`, :mod:`.sharpness`
  (concealment, linear teacher, all modular runs pooled);
- shared helpers: :mod:`.text` (markdown), :mod:`.plots` (figures), :mod:`.study` (the
  pieces of a one-factor study section).

The DVC stage :mod:`groklab.stages.report` reads the tables and writes the files.
"""
