"""Studies built on the workbench: the mathematics and tables of one method each, free of training code."""
