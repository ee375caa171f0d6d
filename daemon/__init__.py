"""sqjobsd: the supervisor-managed daemon of sqjobs workers and beaters."""
