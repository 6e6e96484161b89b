"""Vector tiles (Mapbox Vector Tiles) built in PostGIS with ST_AsMVT; mounted by the API app."""
