"""Custom ExampleGen: a catalogue CSV and its images folder → tf.Example TFRecords + quarantine report."""
