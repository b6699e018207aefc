"""Sources -> rows + stored image files."""
