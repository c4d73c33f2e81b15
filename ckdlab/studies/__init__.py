"""Studies: the code behind each notebook, one module per study.

A study may use the engine, models, data, objectives, results and the workspace; never the API,
the CLI or the widgets (the notebooks call studies and hand models and tables to widgets).
"""
