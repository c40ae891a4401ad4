"""Find processes holding GPU device files and end the orphaned ones safely."""
