"""``tensorgate bench``: closed-loop load per variant, server histograms, SLA verdict, JSON and HTML reports."""
