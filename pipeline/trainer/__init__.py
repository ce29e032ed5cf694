"""The shared model module of both Trainers: backbones, feature caching, head training, export."""
