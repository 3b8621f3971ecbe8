"""What a run is made of: its cases (the inputs) and the adapters (the implementations under test,
behind one interface, found through entry points)."""
