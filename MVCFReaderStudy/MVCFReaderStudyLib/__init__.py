"""Slicer-side adapters of the MVCFReaderStudy module: a reading session on a reader package, driving the
core (mvcf.reader_study) and putting blinded cases into an MRML scene passed in explicitly."""
