"""teams-bridge: Microsoft Teams messaging policies and their assignments as code."""

__version__ = "0.1.0"
