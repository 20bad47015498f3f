"""Offline stub: the project registers no Java toolchains."""

def rules_java_dependencies():
    pass

def rules_java_toolchains():
    pass
