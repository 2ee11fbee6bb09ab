"""Reports for people: a self-contained HTML page per patient and an index page (``reports.html``)."""
