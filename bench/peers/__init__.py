"""One module per framework, each driving it with a scripted model through its own model
interface: ``prepare``, ``w5``, ``w6``, ``w7``, ``NAME``, ``NOTES`` and ``versions``."""
