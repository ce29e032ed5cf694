"""BackboneFeatures: a frozen backbone's features of the train and eval pictures, computed once per
run and shared by every Trainer whose model uses that backbone."""
