"""Sky image collections: FITS headers and footprints ingested into the catalog database,
position queries on an index, and cutouts."""
