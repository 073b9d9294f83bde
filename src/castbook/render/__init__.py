"""Rendering: Batch Render and its consistency gate, Story Mode, contact sheets,
storyboards (PNG, PDF, HTML) and the drift chart. The job kinds that run them live in
:mod:`castbook.tasks`."""
