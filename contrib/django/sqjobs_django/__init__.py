"""sqjobs for Django: add ``"sqjobs_django"`` to ``INSTALLED_APPS``.

At start-up (:mod:`sqjobs_django.apps`) it reads sqjobs' settings from
Django's (:mod:`sqjobs_django.conf`), keeps status rows in Django's
``default`` database (:mod:`sqjobs_django.databases`), closes stale database
connections around each job (:mod:`sqjobs_django.middleware`), makes
``fn.delay_on_commit()`` use ``transaction.on_commit`` and imports the
``jobs.py`` of every installed app. ``manage.py sqjobs ...`` runs the
``sqjobs`` command; :class:`sqjobs_django.models.JobStatus` reads status rows
and the admin lists them.
"""
