"""Training data: RealEstate10K, SpatialVID-style clips and procedural rooms."""
