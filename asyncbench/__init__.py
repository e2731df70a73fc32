"""asyncbench: trustworthy benchmarks of blocking versus asynchronous Python servers."""

__version__ = "0.1.0"
