"""Device protocols: OsmAnd/Traccar HTTP, JT/T 808 TCP, batch uploads and track files."""
