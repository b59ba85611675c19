"""Media: fetching third-party images safely (``fetch``), the image proxy's settings."""
