"""DICOM in and out: which series of a folder is the CT (`series`), that series' identity and headers
(`source`), the TID 1500 measurement report (`sr`), the key images as Secondary Capture (`sc`), the heatmaps as Parametric Maps (`pm`) and sending
them to a PACS (`pacs`).

`series` needs only SimpleITK; the others need the `dicom` extra (pydicom, highdicom, pynetdicom,
dicomweb-client) and import it inside, with a one-line error saying how to install it when it is missing.
"""
