"""The quality study behind docs/quality.md (`make quality`): experiments, outside the installed
packages."""
