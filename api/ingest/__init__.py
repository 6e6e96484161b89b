"""GPS ingest: validate, CRS-normalise, filter (quarantine rejects) and store fixes durably."""
