"""ServingPusher: copies a blessed model into TF Serving's layout, atomically."""
