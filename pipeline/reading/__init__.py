"""Reading a run's inputs: listing what they name (local folders, globs, object-store prefixes), matching them into
units spread over the workers, and reading image files and TFRecords, with an error row for anything that cannot or
must not be read."""
