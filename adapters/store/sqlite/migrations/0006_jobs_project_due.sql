-- Lease walks the projects with due jobs in turn (fairness): the first due
-- job of the next project is one seek here.
CREATE INDEX jobs_project_due ON jobs (project, due_at);
