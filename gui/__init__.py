"""Qt widgets and adapters from core observers to Qt signals."""
