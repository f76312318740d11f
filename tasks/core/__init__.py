"""The bottom of the house: the time base, the data model, the config schema, atomic storage, errors, progress records. Imports nothing else of emoflow."""
