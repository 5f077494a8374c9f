"""HTML pages for people: the landing page and one page per dataset."""
