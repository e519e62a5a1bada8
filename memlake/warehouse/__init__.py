"""The warehouse's own operations: the dbt runner and Hub publishing."""
