"""XML schemas shipped with axis, loaded at run time through importlib.resources."""
