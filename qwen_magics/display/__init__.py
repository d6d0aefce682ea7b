"""What answers look like, independent of where they are shown: markdown, HTML pieces, plain text, charts."""
