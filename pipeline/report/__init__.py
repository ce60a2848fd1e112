"""The run report, report.html in every published partition: what it shows and how it decides (report), the page it
renders (page), the contact sheet the run gathers (sheet) and its pictures read back (pictures)."""
