"""Wire formats the gateway and its peers both speak: DC-09, line frames, mesh."""
