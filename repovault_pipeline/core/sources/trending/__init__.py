"""GitHub trending: which repositories the daily schedule (and `repovault trending`) requests.

Split by job: `page` parses the trending page (and names its options), `client` reads the list
(the page first, GitHub's Search API through the forge layer when the page is of no use), `tick`
turns a list into a schedule tick's plan and its intake run's requests.
"""
