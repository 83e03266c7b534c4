"""The domain: money, postings, accounts and the event-sourced applications of the business."""
