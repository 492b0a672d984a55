"""Reports over cases for the people around the grid: reporters' figures (the volunteer
and helper incentive), the joint-meeting agenda."""
